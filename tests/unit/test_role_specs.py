"""Consistency checks of the roles: argument specs against defaults, required files, templates.

Uses only PyYAML and the standard library; run with ``python -m pytest tests/unit``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLES_DIR = REPO_ROOT / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if p.is_dir())
# A template named _*.j2 is a piece other templates include (roles/puppet_master/templates/
# _apache-tls.conf.j2): the including template carries ansible_managed.
TEMPLATES = sorted(p for p in ROLES_DIR.glob("*/templates/*.j2") if not p.name.startswith("_"))
VALID_TYPES = {"str", "int", "bool", "list", "dict", "float", "path", "raw"}


def _load(path: Path):
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _public_defaults(role: str) -> dict:
    data = _load(ROLES_DIR / role / "defaults" / "main.yml") or {}
    return {key: value for key, value in data.items() if not key.startswith("_")}


def _entry_points(role: str) -> dict:
    path = ROLES_DIR / role / "meta" / "argument_specs.yml"
    assert path.is_file(), f"{role}: {path.relative_to(REPO_ROOT)} is missing"
    data = _load(path) or {}
    entry_points = data.get("argument_specs")
    assert isinstance(entry_points, dict) and entry_points, f"{role}: no argument_specs in meta/argument_specs.yml"
    return entry_points


def _walk_options(options: dict, prefix: str = ""):
    """Yield (dotted name, spec) for every option and suboption."""
    for name, spec in (options or {}).items():
        yield prefix + name, spec
        if isinstance(spec, dict) and spec.get("options"):
            yield from _walk_options(spec["options"], prefix + name + ".")


def _all_options(role: str):
    for entry_name, entry in _entry_points(role).items():
        for name, spec in _walk_options(entry.get("options") or {}):
            yield entry_name, name, spec


def _is_templated(value) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, list):
        return any(_is_templated(item) for item in value)
    if isinstance(value, dict):
        return any(_is_templated(k) or _is_templated(v) for k, v in value.items())
    return False


def test_roles_found():
    assert ROLES, f"no roles under {ROLES_DIR}"


@pytest.mark.parametrize("role", ROLES)
def test_main_entry_point_documents_every_default(role):
    defaults = set(_public_defaults(role))
    entry_points = _entry_points(role)
    assert "main" in entry_points, f"{role}: meta/argument_specs.yml has no 'main' entry point"
    documented = set(entry_points["main"].get("options") or {})
    missing = sorted(defaults - documented)
    extra = sorted(documented - defaults)
    assert not missing and not extra, (
        f"{role}: defaults/main.yml and the 'main' entry point differ; "
        f"undocumented defaults: {missing}; documented options without a default: {extra}"
    )


@pytest.mark.parametrize("role", ROLES)
def test_entry_points_are_described(role):
    for entry_name, entry in _entry_points(role).items():
        assert entry.get("short_description"), f"{role}: entry point {entry_name!r} has no short_description"
        assert entry.get("description"), f"{role}: entry point {entry_name!r} has no description"


@pytest.mark.parametrize("role", ROLES)
def test_other_entry_points_use_known_variables(role):
    defaults = set(_public_defaults(role))
    for entry_name, entry in _entry_points(role).items():
        # The inventory's own inputs (puppet_cluster_combination, _server_name, _ca_server:
        # required, or meaningful when unset) have no default anywhere.
        inputs = {name for name, spec in (entry.get("options") or {}).items()
                  if isinstance(spec, dict) and "default" not in spec and name not in defaults
                  and name in INVENTORY_INPUTS}
        unknown = sorted(set(entry.get("options") or {}) - defaults - inputs - TASK_PARAMETERS)
        assert not unknown, f"{role}: entry point {entry_name!r} documents options not in defaults/main.yml: {unknown}"


@pytest.mark.parametrize("role", ROLES)
def test_options_have_description_and_type(role):
    problems = []
    for entry_name, name, spec in _all_options(role):
        where = f"{entry_name}:{name}"
        if not isinstance(spec, dict):
            problems.append(f"{where} is not a mapping")
            continue
        if not spec.get("description"):
            problems.append(f"{where} has no description")
        if not spec.get("type"):
            problems.append(f"{where} has no type")
        elif spec["type"] not in VALID_TYPES:
            problems.append(f"{where} has unknown type {spec['type']!r}")
        elif spec["type"] == "list" and not spec.get("elements"):
            problems.append(f"{where} is a list without elements")
    assert not problems, f"{role}: " + "; ".join(problems)


@pytest.mark.parametrize("role", ROLES)
def test_choices_contain_default(role):
    problems = []
    for entry_name, name, spec in _all_options(role):
        if not isinstance(spec, dict) or "choices" not in spec or "default" not in spec:
            continue
        if _is_templated(spec["default"]):
            continue
        # A list option's choices apply to each element, as in Ansible's argument spec.
        values = spec["default"] if spec.get("type") == "list" else [spec["default"]]
        if any(value not in spec["choices"] for value in values):
            problems.append(f"{entry_name}:{name} default {spec['default']!r} not in choices {spec['choices']!r}")
    assert not problems, f"{role}: " + "; ".join(problems)


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_match_defaults_file(role):
    """A literal default in the spec equals defaults/main.yml; a Jinja default is not given in the spec."""
    defaults = _public_defaults(role)
    problems = []
    for entry_name, entry in _entry_points(role).items():
        for name, spec in (entry.get("options") or {}).items():
            if name not in defaults or not isinstance(spec, dict):
                continue
            value = defaults[name]
            if _is_templated(value):
                if "default" in spec:
                    problems.append(f"{entry_name}:{name} gives a default although defaults/main.yml templates it")
            elif "default" not in spec:
                problems.append(f"{entry_name}:{name} has no default (defaults/main.yml: {value!r})")
            elif spec["default"] != value or type(spec["default"]) is not type(value):
                problems.append(f"{entry_name}:{name} default {spec['default']!r} != defaults/main.yml {value!r}")
    assert not problems, f"{role}: " + "; ".join(problems)


# The cluster-wide settings role holds defaults and vars only: the others depend on it.
SETTINGS_ROLES = {"puppet_cluster"}
# What every inventory gives (docs/architecture.md, "Inventory contract"), documented by puppet_cluster's
# validate entry point.
INVENTORY_INPUTS = {"puppet_cluster_combination", "puppet_cluster_server_name", "puppet_cluster_ca_server"}
# The parameters of puppet_cluster's jvm_args and service_start_wait entry points, which the
# CA, master and PuppetDB roles import with their own values in vars: inputs of a task, no
# role default.
TASK_PARAMETERS = {"puppet_cluster_jvm_heap", "puppet_cluster_jvm_extra_args", "puppet_cluster_jvm_restart_handler",
                   "puppet_cluster_start_wait_service", "puppet_cluster_start_wait_handler"}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("relpath", ["tasks/main.yml", "handlers/main.yml", "meta/main.yml"])
def test_role_has_required_file(role, relpath):
    if role in SETTINGS_ROLES and relpath != "meta/main.yml":
        # Roles that depend on it run its main tasks: it has none, only other entry points.
        assert not (ROLES_DIR / role / relpath).exists(), f"{role} is a settings role: no {relpath}"
        return
    assert (ROLES_DIR / role / relpath).is_file(), f"{role}: {relpath} is missing"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(ROLES_DIR)))
def test_template_starts_with_ansible_managed(template):
    lines = template.read_text(encoding="utf-8").splitlines()
    index = 1 if lines and lines[0].startswith("#!") else 0
    line = lines[index] if len(lines) > index else ""
    assert "ansible_managed" in line, (
        f"{template.relative_to(REPO_ROOT)}: line {index + 1} must contain ansible_managed, found {line!r}"
    )


# site.yml runs every role's preflight, then its install, on every host before the first
# configuring play: their specs are main's (a YAML alias), so a wrong type stops the run
# before any package is installed.
@pytest.mark.parametrize("role", sorted(set(ROLES) - SETTINGS_ROLES))
def test_early_entry_points_check_mains_options(role):
    entry_points = _entry_points(role)
    for early in ("preflight", "install"):
        assert (ROLES_DIR / role / "tasks" / f"{early}.yml").is_file(), f"{role}: no tasks/{early}.yml"
        assert early in entry_points, f"{role}: meta/argument_specs.yml has no {early!r} entry point"
        assert entry_points[early].get("options") == entry_points["main"].get("options"), (
            f"{role}: the {early!r} entry point must check main's options (options: *{role}_options)")
