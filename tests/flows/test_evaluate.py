"""The evaluate flow: metrics files, artifacts a reviewer reads, and a run record."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.evaluate import evaluate
from tasks.demo.faces import make_demo_source

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def _artifacts(key: str):
    async with get_client() as client:
        # Newest first: the nightly DAG tests publish under the same keys on the shared server.
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC)


def test_evaluate_flow_reports_metrics_failures_and_a_run_record(tmp_path: Path):
    demo = make_demo_source(tmp_path / "demo", identities=4, photos_per_identity=1)
    with open(demo / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[2]["sketch_path"] = "sketches/nobody-drew-this.png"  # a probe that does not exist
    with open(demo / "pairs-missing.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    report = evaluate(pairs=str(demo / "pairs-missing.csv"), workspace=str(tmp_path / "ws"))
    assert Path(report.out) == tmp_path / "ws" / "evaluations" / report.run_id
    metrics = json.loads(Path(report.metrics_json).read_text())
    assert metrics["recognizers"]["baseline"]["n_probes"] == 4
    assert metrics["failed_probes_by_reason"] == {"missing_file": 1}

    summary = asyncio.run(_artifacts("evaluate-summary"))
    assert summary and "| baseline |" in summary[0].data and "missing_file" in summary[0].data
    table = asyncio.run(_artifacts("evaluate-metrics"))
    assert table and "rank1" in table[0].data
    assert asyncio.run(_artifacts("evaluate-failures"))
    record = json.loads((tmp_path / "ws" / "runs" / f"evaluate-{report.run_id}.json")
                        .read_text())
    assert record["flow"] == "evaluate" and record["parameters"]["recognizers"] == ["baseline"]
