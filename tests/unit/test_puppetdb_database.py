"""PuppetDB's database step (roles/puppet_puppetdb/files/puppetdb-database.py): it sets
the role's password again only when PostgreSQL's stored SCRAM verifier is not that of the
vault's password, makes only what is missing, changes nothing in check mode, and never
puts the password on a command line.

`runuser` is replaced on PATH by a stub standing in for `runuser -u postgres psql`: it
logs its arguments and the SQL it got on stdin, and answers the catalog queries from a
JSON state file (which roles, databases and extensions exist)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "roles" / "puppet_puppetdb" / "files" / "puppetdb-database.py"

# Stored by PostgreSQL 17 (Debian 13, the combo3 lab) for the password below.
VERIFIER = ("SCRAM-SHA-256$4096:i7uibCVP0hwhTOIXpVHqCw==$WLLvfC9IhBMuQDBX/yvjy8P8pyeEoY0f9EOyct7QtyA="
            ":JrKAOb1EiGAkV9JF/1fEYGzJziQxD183QY5OPi1M16c=")
PASSWORD = "lab-puppetdb-0123456789"

PSQL_STUB = """#!/usr/bin/env python3
import json, os, sys
state = json.load(open(os.environ["PSQL_STATE"]))
sql = sys.stdin.read()
with open(os.environ["PSQL_LOG"], "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "sql": sql}) + "\\n")
if "FROM pg_authid" in sql:
    if state.get("verifier") is not None:
        print("puppetdb\t" + state["verifier"])
elif "FROM pg_database" in sql:
    if state.get("database"):
        print(1)
elif "FROM pg_extension" in sql:
    if state.get("pg_trgm"):
        print(1)
"""


def run(tmp_path, state, check=False, password=PASSWORD):
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir(exist_ok=True)
    stub = stub_dir / "runuser"
    stub.write_text(PSQL_STUB)
    stub.chmod(0o755)
    (tmp_path / "state.json").write_text(json.dumps(state))
    log = tmp_path / "psql.log"
    log.write_text("")
    env = dict(os.environ, PATH=f"{stub_dir}:{os.environ['PATH']}",
               PSQL_STATE=str(tmp_path / "state.json"), PSQL_LOG=str(log))
    request = {"database": "puppetdb", "user": "puppetdb", "password": password, "check": check}
    result = subprocess.run([sys.executable, str(SCRIPT)], input=json.dumps(request), capture_output=True,
                            text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return json.loads(result.stdout)["changed"], calls


def statements(calls):
    return [call["sql"] for call in calls if not call["sql"].lstrip().upper().startswith("SELECT")]


def test_a_fresh_postgresql_gets_role_database_and_extension(tmp_path):
    changed, calls = run(tmp_path, {})
    assert changed == ["role puppetdb", "database puppetdb", "extension pg_trgm"]
    made = statements(calls)
    assert any("CREATE ROLE \"puppetdb\" LOGIN PASSWORD" in sql for sql in made), made
    assert any(sql.startswith("CREATE DATABASE \"puppetdb\" OWNER \"puppetdb\"") for sql in made), made
    assert "CREATE EXTENSION pg_trgm" in made
    # The password goes to psql on stdin only, never in its arguments.
    assert all(PASSWORD not in " ".join(call["argv"]) for call in calls)


def test_the_stored_verifier_of_the_same_password_changes_nothing(tmp_path):
    changed, calls = run(tmp_path, {"verifier": VERIFIER, "database": True, "pg_trgm": True})
    assert changed == []
    assert statements(calls) == []


def test_another_password_is_set_again(tmp_path):
    changed, calls = run(tmp_path, {"verifier": VERIFIER, "database": True, "pg_trgm": True},
                         password="another-password-0123")
    assert changed == ["password of puppetdb"]
    assert [sql for sql in statements(calls) if "ALTER ROLE" in sql], statements(calls)


@pytest.mark.parametrize("stored", ["", "md5" + "0" * 32, "SCRAM-SHA-256$broken"])
def test_a_password_stored_otherwise_is_set_again_as_scram(tmp_path, stored):
    changed, _calls = run(tmp_path, {"verifier": stored, "database": True, "pg_trgm": True})
    assert changed == ["password of puppetdb"]


def test_check_mode_reports_and_changes_nothing(tmp_path):
    changed, calls = run(tmp_path, {}, check=True)
    assert changed == ["role puppetdb", "database puppetdb", "extension pg_trgm"]
    assert statements(calls) == []
