"""A validated demo workspace per test, copied from one session template (see sketch_data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.sketch_data import copy_workspace, validated_template


@pytest.fixture(scope="session")
def validate_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return validated_template(tmp_path_factory)


@pytest.fixture
def sketch_workspace(validate_template: Path, tmp_path: Path):
    """A private copy holding 48 clean sketches (6 identities x 2 photos x 2 styles x 2)."""
    return copy_workspace(validate_template, tmp_path / "ws")
