"""The CLI writes CLIP4SKETCH_WORKSPACE and PREFECT_HOME into the environment: undo it."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _restore_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CLIP4SKETCH_WORKSPACE", raising=False)
    if "PREFECT_HOME" in os.environ:
        monkeypatch.setenv("PREFECT_HOME", os.environ["PREFECT_HOME"])
    else:
        monkeypatch.delenv("PREFECT_HOME", raising=False)
    yield
