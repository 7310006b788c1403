"""Which Dask cluster a stage's shards go to: the option, then the environment.

``CLIP4SKETCH_DASK_ADDRESS`` is every sharded stage's cluster; generate's older
``CLIP4SKETCH_GENERATE_DASK_ADDRESS`` keeps working and wins for generate alone.
"""

from __future__ import annotations

import pytest

from flows.cli import build_parser
from flows.common import cluster_address
from schemas.settings import load_settings

COMMON, GENERATE, GIVEN = "tcp://common:8786", "tcp://generate:8786", "tcp://given:8786"


@pytest.mark.parametrize(
    ("environment", "given", "expected"),
    [
        ({}, None, {"ingest": None, "embed": None, "generate": None}),
        ({"CLIP4SKETCH_DASK_ADDRESS": COMMON}, None,
         {"ingest": COMMON, "embed": COMMON, "generate": COMMON}),
        ({"CLIP4SKETCH_GENERATE_DASK_ADDRESS": GENERATE}, None,
         {"ingest": None, "embed": None, "generate": GENERATE}),
        ({"CLIP4SKETCH_DASK_ADDRESS": COMMON, "CLIP4SKETCH_GENERATE_DASK_ADDRESS": GENERATE},
         None, {"ingest": COMMON, "embed": COMMON, "generate": GENERATE}),
        ({"CLIP4SKETCH_DASK_ADDRESS": COMMON, "CLIP4SKETCH_GENERATE_DASK_ADDRESS": GENERATE},
         GIVEN, {"ingest": GIVEN, "embed": GIVEN, "generate": GIVEN}),
    ],
)
def test_the_option_then_the_stage_s_own_variable_then_the_common_one(
        monkeypatch, tmp_path, environment, given, expected):
    for name in ("CLIP4SKETCH_DASK_ADDRESS", "CLIP4SKETCH_GENERATE_DASK_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(tmp_path)
    assert {stage: cluster_address(settings, given, stage) for stage in expected} == expected


@pytest.mark.parametrize("argv", [["ingest", "photos"], ["embed"], ["nightly", "photos"],
                                  ["generate"]])
def test_ingest_embed_nightly_and_generate_take_a_dask_address(argv):
    args = build_parser().parse_args([*argv, "--dask-address", GIVEN])
    assert args.dask_address == GIVEN
    assert build_parser().parse_args(argv).dask_address is None
