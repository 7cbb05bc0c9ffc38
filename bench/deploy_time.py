"""Deployment time of a scenario, broken down by role, from a Molecule run's log.

Usage: ./lab scenario combo4 && bench/deploy_time.py .lab-logs/scenario-combo4.log

The lab enables Ansible's profile_roles callback, so every play run ends with a
ROLES RECAP; this reads the recaps of the converge (cold, fresh containers),
idempotence (second run) and check steps and prints a Markdown table.
"""

import re
import sys

ACTION = re.compile(r"\[(?P<scenario>[\w-]+) > (?P<action>\w+)\] Executing")
ROLE_LINE = re.compile(r"^(?P<name>[\w.]+) -+ (?P<seconds>[\d.]+)s$")
TOTAL = re.compile(r"^total -+ (?P<seconds>[\d.]+)s$")


def recaps(lines):
    """Yield (action, {role: seconds}, total) for each play run in the log."""
    action, roles, in_recap = None, {}, False
    for line in lines:
        line = line.rstrip()
        match = ACTION.search(line)
        if match:
            action = match["action"]
            continue
        if line.startswith("ROLES RECAP"):
            in_recap, roles = True, {}
            continue
        if in_recap:
            total = TOTAL.match(line)
            if total:
                yield action, roles, float(total["seconds"])
                in_recap = False
                continue
            role = ROLE_LINE.match(line)
            if role:
                roles[role["name"]] = float(role["seconds"])


def main(path):
    with open(path, encoding="utf-8") as log:
        runs = [run for run in recaps(log) if run[0] in ("converge", "idempotence", "check")]
    if not runs:
        sys.exit(f"{path}: no converge, idempotence or check recap found")
    names = sorted({name for _action, roles, _total in runs for name in roles}, key=lambda n: (not n.startswith("puppet"), n))
    print("| step | total (s) | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for action, roles, total in runs:
        cells = [f"{roles[n]:.1f}" if n in roles else "" for n in names]
        print(f"| {action} | {total:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2])
    main(sys.argv[1])
