"""The legacy scenario reuses the shared verify helpers (the cluster fixture)."""

import os
import sys

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared", "tests"))

from conftest import Cluster, cluster  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
