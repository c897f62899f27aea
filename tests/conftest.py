"""Shared test fixtures. Add yours with a small edit; keep each one cheap or session-scoped."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def local_web_cfg():
    """The CI params (Python docs + 1,000 encyclopedia pages) with the local web built (cached after the first
    build, in $WDLIB_CACHE or ~/.cache/wdlib: ~10 s cold once the packages are downloaded, <1 s after)."""
    from wdlib import params, web

    cfg = params.load("ci.yaml")
    web.build(cfg.web, quiet=True)
    return cfg


@pytest.fixture(scope="session")
def toolbox(local_web_cfg):
    """An open Toolbox over the local web (loopback server running), extractive visit (no summarizer)."""
    from wdlib.tools import Toolbox

    with Toolbox.from_config(local_web_cfg) as tb:
        yield tb
