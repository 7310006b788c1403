"""Style registry: bundled styles, user folders, and errors that name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.settings import load_settings
from schemas.styles import PairedSource, RenderSource
from tasks.styles.registry import (
    BUNDLED_DIR,
    StyleError,
    get_style,
    load_styles,
    style_dirs,
    styles_for,
)


def write_style(folder: Path, file: str, **fields) -> Path:
    data = {"name": "my-style", "prompt": "charcoal drawing",
            "source": {"kind": "render", "renderer": "xdog"}, **fields}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file
    path.write_text(json.dumps(data))
    return path


def test_bundled_styles() -> None:
    styles = load_styles()
    assert {"forensic-artist", "pencil-dodge", "xdog-lines", "demo-pencil"} <= set(styles)
    artist = styles["forensic-artist"]
    assert artist.prompt == "pencil sketch by a forensic artist"
    assert artist.source == PairedSource(kind="paired", sketch_style="artist")
    assert isinstance(styles["xdog-lines"].source, RenderSource)
    assert styles["demo-pencil"].source.sketch_style == "demo-pencil"
    assert all(style.active for style in styles.values())


def test_user_folder_adds_styles(tmp_path: Path) -> None:
    write_style(tmp_path / "styles", "mine.json",
                source={"kind": "render", "renderer": "pencil-dodge",
                        "params": {"blur_sigma": 3.0}}, active=False)
    styles = load_styles([tmp_path / "styles", None])
    assert styles["my-style"].source.params == {"blur_sigma": 3.0}
    assert styles["my-style"].active is False
    assert list(styles) == sorted(styles)


def test_unknown_renderer_names_file_and_field(tmp_path: Path) -> None:
    write_style(tmp_path / "styles", "x.json", source={"kind": "render", "renderer": "foo"})
    with pytest.raises(StyleError) as err:
        load_styles([tmp_path / "styles"])
    assert "styles/x.json: source.renderer: unknown renderer 'foo'; known: pencil-dodge, xdog" \
        in str(err.value)


@pytest.mark.parametrize(("fields", "expected"), [
    ({"source": {"kind": "render", "renderer": "xdog", "params": {"sigmaa": 1}}},
     "source.params: renderer 'xdog' takes no parameter sigmaa"),
    ({"name": "Bad Name"}, "name: String should match pattern"),
    ({"prompt": ""}, "prompt: String should have at least 1 character"),
    ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ({"source": {"kind": "scan"}}, "source: Input tag 'scan' found using 'kind'"),
    ({"source": {"kind": "paired"}}, "source.sketch_style: Field required"),
])
def test_bad_fields_are_named(tmp_path: Path, fields: dict, expected: str) -> None:
    path = write_style(tmp_path, "bad.json", **fields)
    with pytest.raises(StyleError, match="bad.json: ") as err:
        load_styles([tmp_path])
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(StyleError, match=r"broken\.json: not valid JSON"):
        load_styles([tmp_path])


def test_duplicate_names_name_both_files(tmp_path: Path) -> None:
    first = write_style(tmp_path / "a", "one.json")
    second = write_style(tmp_path / "b", "two.json")
    with pytest.raises(StyleError, match="defined twice") as err:
        load_styles([tmp_path / "a", tmp_path / "b"])
    assert str(first) in str(err.value) and str(second) in str(err.value)


def test_a_user_style_cannot_silently_replace_a_bundled_one(tmp_path: Path) -> None:
    write_style(tmp_path, "override.json", name="forensic-artist")
    with pytest.raises(StyleError, match="forensic-artist.*defined twice") as err:
        load_styles([tmp_path])
    assert str(BUNDLED_DIR / "forensic-artist.json") in str(err.value)


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StyleError, match="does not exist"):
        load_styles([tmp_path / "nowhere"])


def test_unknown_style_lists_known() -> None:
    with pytest.raises(StyleError, match="unknown style 'crayon'; known: cufsf-artist, "
                                         "demo-pencil, forensic-artist, pencil-dodge, "
                                         "xdog-lines"):
        get_style("crayon", load_styles())


def test_settings_folder_and_workspace_folder(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    write_style(tmp_path / "extra", "a.json", name="from-setting")
    write_style(tmp_path / "ws" / "styles", "b.json", name="from-workspace")
    monkeypatch.setenv("CLIP4SKETCH_STYLES_DIR", str(tmp_path / "extra"))
    settings = load_settings(tmp_path / "ws")
    assert style_dirs(settings) == [tmp_path / "extra", tmp_path / "ws" / "styles"]
    assert {"from-setting", "from-workspace", "forensic-artist"} <= set(styles_for(settings))
    # The same folder given twice (setting = workspace folder) is read once.
    monkeypatch.setenv("CLIP4SKETCH_STYLES_DIR", str(tmp_path / "ws" / "styles"))
    assert len(style_dirs(load_settings(tmp_path / "ws"))) == 1
