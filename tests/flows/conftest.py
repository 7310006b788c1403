"""Flow-test fixtures: the environment the CLI changes is put back; one tiny generator set-up.

The embedded workspace and its random-init generator are shared by the generate and Dask
cluster tests: they only copy them, and building them costs ingestion plus three encoders.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from data_contracts.thresholds import accept_all_thresholds  # noqa: F401 (the flow tests import it from here)

from ..tasks.generate.conftest import build_generator, build_workspace


@pytest.fixture(autouse=True)
def _restore_environment(monkeypatch: pytest.MonkeyPatch):
    """The CLI writes CLIP4SKETCH_WORKSPACE and PREFECT_HOME into the environment: undo it."""
    monkeypatch.delenv("CLIP4SKETCH_WORKSPACE", raising=False)
    if "PREFECT_HOME" in os.environ:
        monkeypatch.setenv("PREFECT_HOME", os.environ["PREFECT_HOME"])
    else:
        monkeypatch.delenv("PREFECT_HOME", raising=False)
    yield


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny embedded workspace (3 demo identities x 2 photos); tests copy it, never write."""
    return build_workspace(tmp_path_factory.mktemp("generate-flow"))


@pytest.fixture(scope="session")
def generator(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init "tiny" generator matched to ``embedded``'s encoders."""
    return build_generator(embedded, tmp_path_factory.mktemp("gen") / "tiny")
