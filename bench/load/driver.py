"""Entry point of `bench/run load|drill` (docs/load.md); the driver is the package around
this file (bench/load/__init__.py lists its modules)."""

import os
import sys

# Run as a script, Python put this directory first on sys.path: import the package as
# bench.load from the repository root instead, so that none of its modules (lab, env, tls...)
# stands in for another module of the same name.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.load.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
