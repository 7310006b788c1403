"""The CLI: every command listed, and --help that does not pay for heavy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import build_parser

COMMANDS = {"ingest", "embed", "nightly", "backfill", "demo", "train-generator", "generate",
            "evaluate", "train-recognizer", "validate", "datasets", "export", "make-manifest",
            "render-sketches", "encoders", "status"}


def test_help_lists_every_command():
    help_text = build_parser().format_help()
    assert all(command in help_text for command in COMMANDS)


def test_help_imports_nothing_heavy():
    """--help must stay instant: Prefect, torch and friends load only inside commands."""
    code = (
        "import sys\n"
        "from flows.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('prefect', 'torch', 'lancedb', 'great_expectations', 'diffusers',"
        " 'open_clip', 'cv2', 'pyarrow') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "HEAVY []" in out


def test_encoders_command_lists_the_registry(capsys):
    from flows.cli import main

    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    for name in ("sface", "adaface", "effnet-lite0", "open_clip", "minilm"):
        assert name in out


def test_make_manifest_for_the_cuhk_layout(tmp_path, capsys):
    from flows.cli import main

    cuhk = tmp_path / "cuhk"
    (cuhk / "photos").mkdir(parents=True)
    (cuhk / "sketches").mkdir()
    (cuhk / "photos" / "a-001.jpg").write_bytes(b"x")
    (cuhk / "sketches" / "a-001-sz1.jpg").write_bytes(b"y")
    assert main(["make-manifest", str(cuhk), str(tmp_path / "m.csv")]) == 0
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == "identity_id,photo_path,sketch_path,style"
    assert lines[1].startswith("a-001,") and "a-001-sz1.jpg" in lines[1]
    assert "--root" in capsys.readouterr().out


def test_status_on_an_empty_workspace(tmp_path, capsys):
    from flows.cli import main

    assert main(["--workspace", str(tmp_path / "ws"), "status"]) == 0
    assert "empty workspace" in capsys.readouterr().out


@pytest.mark.usefixtures("prefect_harness")
def test_demo_runs_the_nightly_dag_and_ends_with_the_report(tmp_path, capsys, monkeypatch):
    """`make demo` at toy size: first night, a generator, a full night, then the report."""
    from flows.cli import main

    monkeypatch.setenv("CLIP4SKETCH_GENERATE_BATCH_SIZE", "8")
    workspace = tmp_path / "ws"
    assert main(["--workspace", str(workspace), "demo", "--identities", "3", "--photos", "2",
                 "--config", "tiny", "--train-steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "first night (no generator yet):" in out and "trained the demo generator" in out
    night = out[out.index("\nnightly:"):]
    for stage in ("ingest", "embed", "generate", "validate"):
        assert f"  {stage} " in night
    last = out.strip().splitlines()
    report = next(line for line in last if line.strip().startswith("the report:"))
    assert Path(report.split("the report:", 1)[1].strip()).is_file()
    assert (workspace / "datasets" / "faces.parquet").is_file()
    logs = list((workspace / "logs").glob("*-demo.log"))
    assert logs and "Finished in state Completed" in logs[0].read_text()

    # A dry run of the next night plans nothing new, and a backfill of an unknown style
    # fails with one line that lists the known styles.
    assert main(["--workspace", str(workspace), "nightly", str(workspace / "demo-source" /
                 "photos"), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "nothing changed" in dry and "0 new" in dry
    assert main(["--workspace", str(workspace), "backfill", "--style", "charcoal"]) == 2
    assert "unknown style 'charcoal'; known:" in capsys.readouterr().err


def test_make_manifest_for_the_cufsf_layout(tmp_path):
    from flows.cli import main

    cufsf = tmp_path / "cufsf"
    (cufsf / "photos").mkdir(parents=True)
    (cufsf / "sketches").mkdir()
    (cufsf / "photos" / "00002_930831_fa.jpg").write_bytes(b"x")
    (cufsf / "sketches" / "00002_930831_fa.jpg").write_bytes(b"y")
    (cufsf / "photos" / "00003_930831_fb.jpg").write_bytes(b"x")  # no sketch: empty cell
    assert main(["make-manifest", str(cufsf), str(tmp_path / "m.csv"), "--layout", "cufsf",
                 "--style", "cufsf-artist"]) == 0
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[1].startswith("00002_930831_fa,")
    assert lines[1].endswith("sketches/00002_930831_fa.jpg,cufsf-artist")
    assert lines[2].endswith(",,cufsf-artist")


@pytest.mark.parametrize("argv", [
    ["--workspace", "{ws}", "status"],
    ["status", "--workspace", "{ws}"],
    ["--workspace", "elsewhere", "status", "--workspace", "{ws}"],
])
def test_workspace_is_accepted_before_and_after_the_command(tmp_path, argv):
    """`clip4sketch ingest SRC --workspace W` works as `clip4sketch --workspace W ingest SRC`;
    given twice, the one after the command wins (it is the closer to what was typed last)."""
    from flows.cli import _workspace

    args = build_parser().parse_args([a.format(ws=tmp_path) for a in argv])
    assert _workspace(args) == tmp_path.resolve()


def test_workspace_after_the_command_reaches_the_flow(tmp_path, capsys):
    from flows.cli import main

    assert main(["status", "--workspace", str(tmp_path / "ws")]) == 0
    assert f"{(tmp_path / 'ws').resolve()}: empty workspace" in capsys.readouterr().out
