"""Make PuppetDB's database on this host's PostgreSQL, idempotently (puppet_puppetdb role).

Reads one JSON object on standard input: {"database", "user", "password", "check"}. The
password comes on stdin so that it never shows in a process list or a log. Creates the
login role (or sets its password when the stored SCRAM verifier does not match it), the
database owned by that role, and the pg_trgm extension PuppetDB's queries use. Prints one
JSON object: {"changed": [what changed, or would change with "check": true]}.

Runs as root and talks to PostgreSQL as its superuser through `runuser -u postgres psql`
(peer authentication on the local socket): no database driver needed on the host.
Run with python3 (no shebang: the role runs it from its files).
"""

import base64
import hashlib
import hmac
import json
import subprocess
import sys


def psql(sql, database="postgres"):
    """Run one statement as PostgreSQL's superuser; its rows as lists of fields."""
    result = subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-A", "-t", "-F", "\t",
         "-v", "ON_ERROR_STOP=1", "-d", database],
        input=sql, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit("psql failed: " + result.stderr.strip())
    return [line.split("\t") for line in result.stdout.splitlines() if line]


def literal(text):
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def identifier(text):
    """A SQL identifier."""
    return '"' + text.replace('"', '""') + '"'


def scram_matches(verifier, password):
    """Whether PostgreSQL's stored SCRAM-SHA-256 verifier is that of this password
    (RFC 5802: StoredKey = H(HMAC(SaltedPassword, "Client Key")))."""
    try:
        method, rest = verifier.split("$", 1)
        iterations_salt, keys = rest.split("$", 1)
        iterations, salt = iterations_salt.split(":", 1)
        stored_key, _server_key = keys.split(":", 1)
    except ValueError:
        return False
    if method != "SCRAM-SHA-256":
        return False
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(hashlib.sha256(client_key).digest()).decode(), stored_key)


def main():
    """Create or correct what is missing; report it."""
    want = json.load(sys.stdin)
    user, database, password = want["user"], want["database"], want["password"]
    check = want.get("check", False)
    changed = []

    # The name too: a role without a password still gives a non-empty line.
    rows = psql("SELECT rolname, coalesce(rolpassword, '') FROM pg_authid WHERE rolname = %s" % literal(user))
    if not rows:
        changed.append("role " + user)
        if not check:
            psql("SET password_encryption = 'scram-sha-256'; CREATE ROLE %s LOGIN PASSWORD %s"
                 % (identifier(user), literal(password)))
    elif not scram_matches(rows[0][1] if len(rows[0]) > 1 else "", password):
        changed.append("password of " + user)
        if not check:
            psql("SET password_encryption = 'scram-sha-256'; ALTER ROLE %s LOGIN PASSWORD %s"
                 % (identifier(user), literal(password)))

    if not psql("SELECT 1 FROM pg_database WHERE datname = %s" % literal(database)):
        changed.append("database " + database)
        if not check:
            psql("CREATE DATABASE %s OWNER %s ENCODING 'UTF8' TEMPLATE template0"
                 % (identifier(database), identifier(user)))

    # In check mode a database still to be made has no extension to look for.
    if check and "database " + database in changed:
        changed.append("extension pg_trgm")
    elif not psql("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'", database):
        changed.append("extension pg_trgm")
        if not check:
            psql("CREATE EXTENSION pg_trgm", database)

    print(json.dumps({"changed": changed}))


if __name__ == "__main__":
    main()
