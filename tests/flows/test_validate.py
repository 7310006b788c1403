"""The validate flow under Prefect: published (Completed) or rejected (Failed, report first)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from benchmarks.sketch_data import (
    broken_sketches,
    copy_workspace,
    validated_template,
    write_sketches,
)
from flows.validate import ContractsFailedError, validate
from tasks.locking import workspace_lock
from tasks.validate import publish

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def workspace(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path):
    return copy_workspace(validated_template(tmp_path_factory), tmp_path / "ws")


async def _artifacts(key: str) -> list:
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_a_clean_dataset_is_published_with_report_and_artifacts(workspace):
    outcome = validate(workspace=str(workspace.root))
    assert outcome.published and publish.current_version(workspace) == outcome.version
    assert Path(outcome.report_path).is_file() and outcome.run_id in outcome.report_path
    record = json.loads(Path(outcome.run_record).read_text())
    assert record["flow"] == "validate" and record["stages"]["validate"]["published"]
    summary = asyncio.run(_artifacts("validate-summary"))
    assert any(outcome.version in a.data and "**published**" in a.data for a in summary)
    assert any("**pencil-dodge**: pass, 12 of 12 won" in a.data for a in summary)
    styles = asyncio.run(_artifacts("validate-styles"))
    assert any("pencil-dodge" in a.data and "xdog-lines" in a.data and "style_contract"
               in a.data for a in styles)
    links = asyncio.run(_artifacts("validate-report"))
    assert any(Path(outcome.report_path).as_uri() in a.data for a in links)
    with workspace_lock(workspace.root, "test", timeout=0):  # released by the flow
        pass


def test_broken_sketches_fail_the_flow_after_the_report_is_written(workspace):
    write_sketches(workspace, list(broken_sketches(workspace).values()))
    state = validate(workspace=str(workspace.root), return_state=True)
    assert state.is_failed()
    with pytest.raises(ContractsFailedError, match="was not published") as error:
        state.result()
    message = str(error.value)
    assert "expect_column_values_to_be_in_set(healthy)" in message
    report = Path(message.split("Report: ")[1].split(". The published")[0])
    assert report.is_file() and "REJECTED" in report.read_text()
    assert "none (nothing published yet)" in message
    assert publish.current_version(workspace) is None
    (version,) = publish.list_versions(workspace)
    assert version["status"] == "rejected" and version["report_path"] == str(report)
