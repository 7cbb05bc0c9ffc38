"""Every relative link of the documentation the Galaxy tarball ships points at a file that
the tarball ships too: a link into what build_ignore leaves out (bench/, tests/, the lab)
would be dead for everyone who installed the collection."""

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
IGNORED = yaml.safe_load((ROOT / "galaxy.yml").read_text())["build_ignore"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def shipped(relpath):
    """As ansible-galaxy applies build_ignore: a pattern matches the path or a folder of it."""
    parts = Path(relpath).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return not any(fnmatch.fnmatch(prefix, pattern) for pattern in IGNORED for prefix in prefixes)


DOCS = sorted(str(path.relative_to(ROOT)) for path in [*ROOT.glob("*.md"), *ROOT.glob("docs/**/*.md")]
              if shipped(str(path.relative_to(ROOT))))


def test_the_documentation_is_shipped():
    assert {"README.md", "docs/architecture.md", "docs/operations.md", "docs/benchmarks.md"} <= set(DOCS), DOCS


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_point_at_shipped_files(doc):
    problems = []
    for target in LINK.findall((ROOT / doc).read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = ((ROOT / doc).parent / target.split("#")[0]).resolve()
        relpath = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        if not path.exists():
            problems.append(f"{target}: no such file")
        elif not shipped(relpath):
            problems.append(f"{target}: left out of the Galaxy build (build_ignore)")
    assert not problems, f"{doc}: " + "; ".join(problems)
