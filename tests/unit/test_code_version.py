"""puppet_master_code_git_version reaches the masters as exactly the branch or tag it
names: never another ref whose name merely ends like it (`git ls-remote <repo> production`
also lists refs/heads/a/production, and lists it first).

The role's own tasks (roles/puppet_master/tasks/code.yml, through include_role) run on this
machine (ansible_connection=local) against a bare repository made here, checking out
under a temporary directory: one play per case, each its own host and environment
directory. A case that fails is rescued and its task and message written to a file, so
every case runs in one ansible-playbook run. The play ends before handlers (puppetserver
reloads) could run.
"""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def git(*args, cwd):
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False,
                            env=dict(os.environ, GIT_AUTHOR_NAME="lab", GIT_AUTHOR_EMAIL="lab@domain.com",
                                     GIT_COMMITTER_NAME="lab", GIT_COMMITTER_EMAIL="lab@domain.com"))
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A control repository: branch production and annotated tag release-1 on one commit;
    decoys whose names end in /production or /release-1 on another; a branch and a tag
    both named `both`, on two more commits."""
    base = tmp_path_factory.mktemp("code")
    work = base / "work"
    work.mkdir()
    git("init", "-q", "-b", "production", cwd=work)
    commits = {}
    for name in ("production", "decoy", "both branch", "both tag"):
        git("commit", "-q", "--allow-empty", "-m", name, cwd=work)
        commits[name] = git("rev-parse", "HEAD", cwd=work)
    bare = base / "control.git"
    git("init", "-q", "--bare", str(bare), cwd=base)
    git("tag", "-a", "-m", "release 1", "release-1", commits["production"], cwd=work)
    git("tag", "both", commits["both tag"], cwd=work)
    git("push", "-q", str(bare),
        f"{commits['production']}:refs/heads/production",
        f"{commits['decoy']}:refs/heads/a/production",
        f"{commits['decoy']}:refs/heads/x/production",
        f"{commits['decoy']}:refs/heads/x/refs/heads/production",
        f"{commits['decoy']}:refs/heads/a/release-1",
        f"{commits['both branch']}:refs/heads/both",
        "refs/tags/release-1", "refs/tags/both", cwd=work)
    return {"url": str(bare), "commits": commits, "base": base}


# case: (puppet_master_code_git_repo or None for the test repository, puppet_master_code_git_version)
CASES = {
    "branch": (None, "production"),
    "annotated_tag": (None, "release-1"),
    "full_ref_of_a_tag": (None, "refs/tags/both"),
    "full_ref_of_a_branch": (None, "refs/heads/both"),
    "commit": (None, "COMMIT_OF_PRODUCTION"),
    "branch_and_tag": (None, "both"),
    "nothing": (None, "missing"),
    "repository_like_an_option": ("--upload-pack=touch INJECTED #", "production"),
}


@pytest.fixture(scope="module")
def deployments(repo, tmp_path_factory):
    """Each case's outcome: ('deployed', commit) or ('failed', 'task: message')."""
    run = tmp_path_factory.mktemp("run")
    hosts, plays = {}, []
    for case, (url, version) in CASES.items():
        hosts[case] = {"ansible_connection": "local", "ansible_python_interpreter": os.environ.get(
            "PREFLIGHT_PYTHON", "/usr/bin/python3")}
        url = (url or repo["url"]).replace("INJECTED", str(run / "injected"))
        version = version.replace("COMMIT_OF_PRODUCTION", repo["commits"]["production"])
        plays.append({
            "name": case, "hosts": case, "gather_facts": False,
            "vars": {"puppet_master_code_git_repo": url, "puppet_master_code_git_version": version,
                     "puppet_master_code_environment": case},
            "tasks": [
                {"block": [{"ansible.builtin.include_role": {
                    "name": "marionette.puppet_cluster.puppet_master", "tasks_from": "code"}}],
                 "rescue": [{"ansible.builtin.copy": {
                     "content": "{{ ansible_failed_task.name }}: {{ ansible_failed_result.msg }}",
                     "dest": str(run / f"{case}.failed"), "mode": "0644"}}]},
                # No handler runs: nothing here may reload a service of this machine.
                {"ansible.builtin.meta": "end_play"},
            ],
        })
    (run / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    (run / "play.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run(
        ["ansible-playbook", "-i", str(run / "hosts.yml"), str(run / "play.yml"),
         "-e", f"_puppet_master_codedir={run / 'code'}"],
        capture_output=True, text=True, env=env, cwd=run, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    outcomes = {"injected file": (run / "injected").exists()}
    for case in CASES:
        failed = run / f"{case}.failed"
        checkout = run / "code" / "environments" / case
        if failed.exists():
            outcomes[case] = ("failed", failed.read_text())
        elif checkout.is_dir():
            outcomes[case] = ("deployed", git("rev-parse", "HEAD", cwd=checkout))
        else:
            outcomes[case] = ("nothing", "")
    return outcomes


@pytest.mark.parametrize("case, commit", [
    ("branch", "production"),
    ("annotated_tag", "production"),
    ("full_ref_of_a_tag", "both tag"),
    ("full_ref_of_a_branch", "both branch"),
    ("commit", "production"),
])
def test_the_version_deploys_exactly_the_ref_it_names(repo, deployments, case, commit):
    assert deployments[case] == ("deployed", repo["commits"][commit])


def test_a_branch_and_a_tag_of_the_same_name_stop_the_play(deployments):
    outcome, message = deployments["branch_and_tag"]
    assert outcome == "failed"
    assert "puppet_master_code_git_version 'both' must name exactly one branch or tag" in message
    assert "refs/heads/both, refs/tags/both" in message


def test_a_version_naming_nothing_stops_the_play(deployments):
    outcome, message = deployments["nothing"]
    assert outcome == "failed"
    assert "puppet_master_code_git_version 'missing' must name exactly one branch or tag" in message
    assert "it names none" in message


def test_a_repository_named_like_an_option_is_not_one(deployments):
    """`git ls-remote --upload-pack=<command> ...` would run the command: `--` first."""
    assert deployments["repository_like_an_option"][0] == "failed"
    assert deployments["injected file"] is False
