"""Progress: a Prefect progress artifact inside runs, a bar on a terminal, nothing else."""

from __future__ import annotations

import asyncio

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from tasks.progress import Progress


async def _latest(key: str):
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return found


@pytest.mark.usefixtures("prefect_harness")
def test_a_stage_inside_a_flow_leaves_a_finished_progress_artifact():
    @flow
    def stage() -> None:
        with Progress("Embed faces!", unit="face", terminal=False) as progress:
            for done in range(1, 11):
                progress(done, 10)  # the (done, total) callback form

    stage()
    artifacts = asyncio.run(_latest("embed-faces"))
    assert artifacts and artifacts[0].type == "progress"
    assert float(artifacts[0].data) == 100.0


def test_outside_prefect_it_only_counts(capsys):
    progress = Progress("plain", total=4, terminal=False)
    progress.advance(3)
    assert progress.percent == 75.0
    progress(1, 2)  # a new total starts the next round
    assert (progress.done, progress.total) == (1, 2)
    progress.close()
    assert capsys.readouterr().err == ""
