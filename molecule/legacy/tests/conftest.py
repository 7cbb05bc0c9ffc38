"""The legacy scenario reuses the shared verify helpers (the cluster fixture).

Loaded under another module name: this file is itself `conftest` for pytest, and the
shared test modules it borrows from (test_rollout) import SSLDIR from `conftest`.
"""

import importlib.util
import os
import sys

SHARED = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared", "tests")
sys.path.insert(0, SHARED)

_spec = importlib.util.spec_from_file_location("shared_conftest", os.path.join(SHARED, "conftest.py"))
shared_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shared_conftest)

Cluster = shared_conftest.Cluster
SSLDIR = shared_conftest.SSLDIR
cluster = shared_conftest.cluster
