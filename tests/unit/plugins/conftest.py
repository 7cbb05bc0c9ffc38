# -*- coding: utf-8 -*-
# Copyright: (c) 2025, marionette developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared setup of the plugin tests: the collection on sys.path, and a fake puppetserver CA.

The collection imports itself as ``ansible_collections.marionette.puppet_cluster``: from the
checkout, collections/ holds a link to it under that name; from a copy already laid out as
``.../ansible_collections/marionette/puppet_cluster`` (ansible-test's), its grandparent is used.

The ``fake_ca`` fixture installs a ``FakeCA`` (puppet_ca_fakes.py) in place of
``http.client.HTTPSConnection``, so modules run unchanged, with no TLS file and no network.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
if ROOT.parent.name == 'marionette' and ROOT.parent.parent.name == 'ansible_collections':
    _COLLECTIONS = ROOT.parents[2]
else:
    _COLLECTIONS = ROOT / 'collections'
for _path in (str(_COLLECTIONS), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from puppet_ca_fakes import FakeCA, FakeHTTPSConnection  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture
def fake_ca(monkeypatch):
    """Install a FakeCA built from the given arguments; returns it."""
    from http import client as http_client
    from ansible_collections.marionette.puppet_cluster.plugins.module_utils import puppet_ca

    def install(*args, **kwargs):
        ca = FakeCA(*args, **kwargs)
        monkeypatch.setattr(http_client, 'HTTPSConnection', lambda *a, **kw: FakeHTTPSConnection(ca, *a, **kw))
        monkeypatch.setattr(puppet_ca.PuppetCA, '_make_context', lambda self: object())
        return ca

    return install
