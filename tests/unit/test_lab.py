"""Bad input to ./lab ends with a one-line reason, never a stack trace."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB = str(ROOT / "lab")


def run_lab(*args, env=None, preexec=None, lab=LAB):
    return subprocess.run([str(lab), *args], capture_output=True, text=True, env=env, preexec_fn=preexec, timeout=600,
                          check=False)


def test_unknown_debian_release_is_named():
    result = run_lab("images", "sarge")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "lab: unknown Debian release 'sarge' (known: bullseye bookworm trixie)"
    ]


def test_unknown_subcommand_prints_usage():
    result = run_lab("frobnicate")
    assert result.returncode == 1
    assert result.stderr.startswith("lab: usage: ./lab demo | test")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_no_docker_and_not_root_says_what_to_install():
    # A copy of ./lab in a directory the unprivileged user can reach: the checkout itself
    # may sit below a private directory (a clone into `mktemp -d` does).
    work = Path(tempfile.mkdtemp(dir="/var/tmp"))
    try:
        work.chmod(0o755)
        shutil.copy2(LAB, work / "lab")
        fake_bin = work / "bin"
        fake_bin.mkdir()
        (fake_bin / "docker").write_text("#!/bin/sh\nexit 1\n")
        (fake_bin / "docker").chmod(0o755)
        env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "LAB_LOG_DIR": str(work / "logs")}
        result = run_lab("engine", env=env, preexec=lambda: (os.setgid(65534), os.setuid(65534)), lab=work / "lab")
    finally:
        shutil.rmtree(work)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "lab: no Docker engine answers and this is not Debian as root: install and start Docker, then run again"
    ]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("docker") is None, reason="needs root and a Docker engine")
def test_disk_full_during_debootstrap_is_reported(tmp_path):
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no Docker engine answers")
    small = tempfile.mkdtemp(dir="/var/tmp")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", small], check=True)
    try:
        # A debootstrap that writes into its target until the file system is full.
        fake_bin = tmp_path / "bin"
        fake_bin.mkdir()
        (fake_bin / "debootstrap").write_text(
            '#!/bin/sh\nfor target; do :; done\ntarget=$3\n'
            'dd if=/dev/zero of="$target/fill" bs=1M count=64 2>/dev/null\nexit 1\n'
        )
        (fake_bin / "debootstrap").chmod(0o755)
        env = dict(os.environ, PATH=f"{fake_bin}:{os.environ['PATH']}", LAB_TMP=small,
                   LAB_LOG_DIR=str(tmp_path / "logs"))
        # ./lab sourced, its image tag replaced by a throwaway one no image has, so the
        # build runs even where `./lab test` built the real bullseye image (the test used
        # to skip then, that is always). It fails before tagging anything.
        throwaway = f"puppet-cluster-lab/debian:disk-full-test-{os.getpid()}"
        assert subprocess.run(["docker", "images", "-q", throwaway], capture_output=True, text=True,
                              check=True).stdout.strip() == ""
        result = subprocess.run(["bash", "-c", f'. "{LAB}"; image_tag() {{ echo "{throwaway}"; }}; cmd_images bullseye'],
                                capture_output=True, text=True, env=env, timeout=600, check=False)
    finally:
        subprocess.run(["umount", small], check=False)
        os.rmdir(small)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: debootstrap of bullseye failed: disk full"), result.stderr


@pytest.mark.parametrize("failing", ["yamllint", "ansible-lint", "python3"])
def test_lint_fails_when_any_of_its_checks_fails(tmp_path, failing):
    # A virtualenv whose tools pass, but one: ./lab lint must fail with it (a yamllint
    # error followed by a passing role-docs check once counted as "lint ok").
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'PATH="{venv}/bin:$PATH"\n')
    for tool in ("yamllint", "ansible-lint", "python3"):
        (venv / "bin" / tool).write_text("#!/bin/sh\nexit %d\n" % (1 if tool == failing else 0))
        (venv / "bin" / tool).chmod(0o755)
    (venv / ".requirements.sha256").write_text(
        subprocess.run(["sha256sum", str(ROOT / "requirements.txt")], capture_output=True, text=True,
                       check=True).stdout.split()[0] + "\n")
    env = dict(os.environ, LAB_VENV=str(venv), LAB_LOG_DIR=str(tmp_path / "logs"))
    result = run_lab("lint", env=env)
    assert result.returncode != 0, result.stdout + result.stderr


@pytest.mark.parametrize("lines,summary,ok", [
    # Every step passed, each line with its CPU seconds last (the line ended in "passed"
    # before those were added, and "passed$" then counted nothing: "0 passed, 10 failed").
    (["lint 24 passed 30"] + [f"step{i} 300 passed 420" for i in range(9)], "10 passed, 0 failed", True),
    (["lint 24 failed 30"] + [f"step{i} 300 passed 420" for i in range(9)], "9 passed, 1 failed", False),
    # A lane that died after two steps: the steps it never wrote count as failed.
    (["lint 24 passed 30", "unit 180 passed 240"], "2 passed, 8 failed", False),
])
def test_the_summary_counts_each_steps_result(tmp_path, lines, summary, ok):
    results = tmp_path / "results"
    (tmp_path / "results.1").write_text("\n".join(lines) + "\n")
    # Ten steps: the four checks and six scenarios, legacy's included (LAB_LEGACY=1).
    result = subprocess.run(["bash", "-c", f'. "{LAB}"; summarize_results "{results}"'], capture_output=True,
                            text=True, timeout=60, check=False, env=dict(os.environ, LAB_LEGACY="1"))
    assert result.stdout.strip() == summary, result.stdout + result.stderr
    assert (result.returncode == 0) == ok


# The check step of a scenario's log as Molecule writes it under ./lab (PY_COLORS=0),
# cut from a real combo4 run; {changed} is puppet1's count.
CHECK_LOG = """INFO     [combo4 > converge] Executed: Successful
INFO     [combo4 > check] Executing
PLAY [Converge] ****************************************************************
PLAY RECAP *********************************************************************
agent1.domain.com          : ok=38   changed=0    unreachable=0    failed=0    skipped=7    rescued=0    ignored=0
puppet1.domain.com         : ok=80   changed={changed}    unreachable=0    failed=0    skipped=44   rescued=0    ignored=0
puppetca.domain.com        : ok=37   changed=0    unreachable=0    failed=0    skipped=16   rescued=0    ignored=0

INFO     [combo4 > check] Executed: Successful
INFO     [combo4 > verify] Executing
PLAY RECAP *********************************************************************
puppet1.domain.com         : ok=3    changed=0    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
"""


@pytest.mark.parametrize("log,ok,said", [
    (CHECK_LOG.format(changed=0), True, ""),
    # A task that always changes in check mode: 2 and 12 changes, not only 1.
    (CHECK_LOG.format(changed=2), False, "lab: scenario combo4: check mode reported changes on a converged cluster"),
    (CHECK_LOG.format(changed=12), False, "lab: scenario combo4: check mode reported changes on a converged cluster"),
    # Molecule's coloured format ("combo4 ➜ check: Executing"): the range finds no check
    # step, and a gate that greps nothing must not pass.
    (CHECK_LOG.format(changed=2).replace("[combo4 > check]", "combo4 ➜ check:"), False,
     "lab: scenario combo4: no PLAY RECAP of the check step"),
    # The check step printed no recap at all.
    ("INFO     [combo4 > check] Executing\nINFO     [combo4 > check] Executed: Successful\n", False,
     "lab: scenario combo4: no PLAY RECAP of the check step"),
])
def test_the_check_gate_fails_on_changes_and_on_a_log_it_cannot_read(tmp_path, log, ok, said):
    path = tmp_path / "scenario-combo4.log"
    path.write_text(log)
    result = subprocess.run(["bash", "-c", f'. "{LAB}"; check_changed_nothing combo4 "{path}"'],
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode == 0) == ok, result.stdout + result.stderr
    assert result.stdout.startswith(said), result.stdout + result.stderr


def test_the_checks_at_once_write_one_line_each_in_order_with_their_results(tmp_path):
    """The four checks run at the same time; each writes its own line (a failed one too,
    and one that died before writing counts as failed), in a fixed order, so the summary
    and the budget read them as before. Stub checks: sanity fails, build dies silently."""
    results = tmp_path / "results"
    stubs = ('run_step() { case $1 in unit) sleep 1;; sanity) echo "sanity broke"; return 1;; '
             'build) kill -9 $BASHPID;; esac; return 0; }')
    result = subprocess.run(["bash", "-c", f'. "{LAB}"; {stubs}; run_checks_at_once "{results}"'],
                            capture_output=True, text=True, timeout=60, check=False)
    lines = results.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["lint", "unit", "sanity", "build"], lines
    assert [line.split()[2] for line in lines] == ["passed", "passed", "failed", "failed"], lines
    # Each step's wall time; the stretch's CPU on the first line only.
    assert int(lines[1].split()[1]) >= 1 and all(line.split()[3] == "0" for line in lines[1:]), lines
    assert "sanity broke" in result.stdout, result.stdout + result.stderr
    assert not list(tmp_path.glob("results.*")), "the per-check files are left behind"


def test_a_scenario_starts_without_the_containers_and_the_state_of_an_earlier_run(tmp_path):
    """clear_scenario removes the lab network's containers and Molecule's working
    directory of the scenario (its state says "created" after an interrupted run, and
    create would then be skipped): the stub docker lists two containers."""
    state = tmp_path / "molecule.XXXX.combo4"
    state.mkdir()
    (state / "state.yml").write_text("created: true\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\necho "docker $*" >> "{tmp_path}/docker.log"\n'
                      'if [ "$1" = ps ]; then printf "c1\\nc2\\n"; fi\n')
    docker.chmod(0o755)
    stubs = f'molecule_ephemeral_dir() {{ echo "{state}"; }}\n'
    result = subprocess.run(["bash", "-c", f'. "{LAB}"\n{stubs}clear_scenario combo4'],
                            capture_output=True, text=True, timeout=60, check=False,
                            env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not state.exists(), "Molecule's state of the earlier run is left"
    calls = (tmp_path / "docker.log").read_text().splitlines()
    assert calls == ["docker ps -aq --filter network=puppet-lab", "docker rm -f -v c1 c2"], calls


@pytest.mark.parametrize("full, expected", [("0", ["combo4", "combo3"]), ("1", ["combo4", "combo1", "combo3", "combo2", "combo5"])])
def test_the_default_run_keeps_the_check_step_where_every_role_is(full, expected):
    """combo4 and combo3 hold every role between them; LAB_FULL=1 checks every scenario."""
    listing = subprocess.run(
        ["bash", "-c", f'. "{LAB}"; for s in combo4 combo1 combo3 combo2 combo5; do runs_check_step $s && echo $s; done'],
        capture_output=True, text=True, timeout=60, check=False, env=dict(os.environ, LAB_FULL=full))
    assert listing.stdout.split() == expected, listing.stdout + listing.stderr
