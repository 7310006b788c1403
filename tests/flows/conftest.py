"""Flow-test fixtures: the environment the CLI changes is put back; one tiny generator set-up.

The embedded workspace and its random-init generator are shared by the generate and Dask
cluster tests: they only copy them, and building them costs ingestion plus three encoders.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from data_contracts.thresholds import THRESHOLDS_FILE

from ..tasks.generate.conftest import build_generator, build_workspace

# Every per-sketch limit and every share opened up. Flow tests draw with random-init tiny
# generators, whose noise the reviewed thresholds rightly refuse; tests of publishing, of
# equal datasets and of the DAG need a dataset that passes. The quality gate itself is
# tested with the reviewed file (tests/flows/test_validate.py, test_nightly_dag.py).
ACCEPT_ALL = {
    "min_identity_similarity": -1.0, "min_share_identity": 0.0, "min_identity_margin": -2.0,
    "min_share_margin": 0.0, "max_share_wrong_style": 1.0, "min_pixel_std": 0.0,
    "max_saturated_share": 1.0, "max_colour_deviation": 255.0, "min_contrast": 0.0,
    "min_neighbour_correlation": -1.0, "max_share_unhealthy": 1.0,
    "max_mean_pairwise_similarity": 1.0, "min_mean_pairwise_similarity": -1.0,
    "min_share_diverse_groups": 0.0,
}


def accept_all_thresholds(path: Path) -> Path:
    """The reviewed thresholds file with ``ACCEPT_ALL`` applied, written to ``path``."""
    reviewed = yaml.safe_load(THRESHOLDS_FILE.read_text())
    reviewed["sketches"].update(ACCEPT_ALL)
    path.write_text(yaml.safe_dump(reviewed))
    return path


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
