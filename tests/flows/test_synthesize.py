"""The synthesize-mugshots flow and command, run by Prefect with the real bundled model.

A few faces only (shards of 2): a folder source ``ingest`` takes as it is, the same pixels
for the same seed, resume after a killed shard with nothing drawn or filed twice, extension
from surplus candidates, a folder refused for other parameters, and the missing-extra
message.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

SEED = 7


def _needs_extra() -> None:
    pytest.importorskip("openvino", reason="needs the 'synthetic' extra (make synthetic)")


def _pictures(root: Path) -> dict[str, str]:
    """identity/file -> sha256 of every face in the identity folders (what ingest reads)."""
    return {f"{p.parent.name}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("*/*.png")) if not p.parent.name.startswith(".")}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory):
    """Three identities drawn by the flow, uninterrupted: the reference for other tests."""
    _needs_extra()
    from flows.synthesize import synthesize_mugshots

    out = tmp_path_factory.mktemp("synthetic") / "source"
    report = synthesize_mugshots(out=str(out), identities=3, seed=SEED, shard_size=2)
    return out, report, _pictures(out)


def test_flow_writes_a_folder_source_that_ingest_takes(drawn, tmp_path: Path):
    from flows.ingest import ingest

    out, report, pictures = drawn
    assert report.kept == 3 and report.kept_new == 3 and report.images == 3
    assert report.refused == {} and report.short_by == 0
    assert report.candidates_drawn == 4 and report.surplus == 1  # two whole shards of 2
    assert report.seconds_per_image and report.seconds_per_image > 0
    assert report.impostor.pairs == 3 and report.impostor.median < 0.363
    assert len({name.split("/")[0] for name in pictures}) == 3
    manifest = json.loads((out / "synthetic-manifest.json").read_text())
    for key in ("generator", "weights_sha256", "seed", "truncation", "sigma", "licence"):
        assert key in manifest
    assert manifest["seed"] == SEED and manifest["truncation"] == 1.0
    assert (out / ".gitignore").read_text().splitlines()[-1] == "*"

    (result,) = ingest(sources=[str(out)], workspace=str(tmp_path / "ws"))
    assert result.n_ingested == 3 and result.n_quarantined == 0


def test_same_seed_same_pixels_and_resume_after_a_kill(drawn, tmp_path: Path):
    """The first shard is killed after one candidate; the rerun draws only what is missing
    and ends with exactly the pictures of the uninterrupted run."""
    from flows.synthesize import build_request, synthesize_mugshots
    from tasks.synthesize.shard import SimulatedCrash, run_shard, shard_refs
    from tasks.synthesize.source import open_source

    _, reference, pictures = drawn
    out = tmp_path / "killed"
    request = build_request(str(out), 3, SEED, 1.0, 1, 0.3, 512, 2, 1, None, None, {})
    open_source(request)
    first = shard_refs(request, 0, 2)[0]
    with pytest.raises(SimulatedCrash):
        run_shard(request, first, crash_after=1)
    assert not any(p.is_dir() and p.name[0] != "." for p in out.iterdir())  # nothing filed

    report = synthesize_mugshots(out=str(out), identities=3, seed=SEED, shard_size=2)
    assert report.candidates_drawn == reference.candidates_drawn - 1  # the journaled one
    assert _pictures(out) == pictures  # same names, same bytes: nothing doubled or missing

    again = synthesize_mugshots(out=str(out), identities=3, seed=SEED, shard_size=2)
    assert again.candidates_drawn == 0 and again.kept_new == 0 and again.shards == 0
    assert _pictures(out) == pictures


def test_a_larger_request_extends_the_folder_from_its_surplus(drawn, tmp_path: Path):
    import shutil

    from flows.synthesize import synthesize_mugshots

    source, reference, pictures = drawn
    out = tmp_path / "extended"
    shutil.copytree(source, out)
    drawn_before = {p.name: p.read_bytes() for p in out.glob(".synthesize/shards/*.json")}
    report = synthesize_mugshots(out=str(out), identities=4, seed=SEED, shard_size=2)
    assert report.kept == 4 and report.kept_new == 1
    # Candidate 3, drawn as surplus by the first run, is judged without being drawn again
    # (seed 7 makes it a turned head, refused as bad_alignment; then one more shard).
    assert report.shards_skipped == 1
    assert report.candidates_judged == 1 + sum(report.refused.values())
    assert report.candidates_drawn == (0 if not report.refused else 2)
    for name, data in drawn_before.items():
        assert (out / ".synthesize" / "shards" / name).read_bytes() == data
    assert set(pictures).issubset(_pictures(out))


def test_a_folder_drawn_with_another_seed_is_refused(drawn):
    from flows.synthesize import synthesize_mugshots
    from tasks.synthesize.source import SourceMismatchError

    out, _, pictures = drawn
    with pytest.raises(SourceMismatchError, match="seed 7"):
        synthesize_mugshots(out=str(out), identities=3, seed=SEED + 1, shard_size=2)
    assert _pictures(out) == pictures


@pytest.mark.parametrize("blocked", ["random_face", "openvino"])
def test_without_the_extra_the_command_says_how_to_install_it(blocked, tmp_path, monkeypatch,
                                                              capsys):
    """A module set to None in sys.modules cannot be imported or found: the extra is gone
    as far as this process can tell."""
    from flows.cli import main

    monkeypatch.setitem(sys.modules, blocked, None)
    code = main(["--workspace", str(tmp_path / "ws"), "synthesize-mugshots", "2",
                 "--out", str(tmp_path / "src")])
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install --no-deps random-face==2021.7.21.1" in err
    assert "pip install -e '.[synthetic]'" in err
    assert not (tmp_path / "src").exists()


def test_help_says_what_extra_images_are():
    from flows.cli import build_parser

    parser = build_parser()
    assert "synthesize-mugshots" in parser.format_help()
    sub = parser._subparsers._group_actions[0].choices["synthesize-mugshots"]
    text = " ".join(sub.format_help().split())
    assert "near-duplicates" in text and "--images-per-identity" in text
