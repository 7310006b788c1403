"""The style registry: style files scanned from folders, validated, and looked up by name.

The bundled styles are the JSON files beside this module (the way open_clip ships its model
configs); users add their own in a folder given by ``CLIP4SKETCH_STYLES_DIR`` or in
``<workspace>/styles/``. A style name must be unique across all folders: a silent override would
make the same name mean different training targets in different workspaces.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import ValidationError

from schemas.settings import Settings
from schemas.styles import Style
from tasks.styles.rendering import RENDERERS

BUNDLED_DIR = Path(__file__).parent
WORKSPACE_STYLES = "styles"
# Tags pydantic inserts into an error location for a discriminated union; readers want
# "source.renderer", not "source.render.renderer".
_UNION_TAGS = {"paired", "render"}


class StyleError(ValueError):
    """A style file that cannot be used, two styles with one name, or an unknown style."""


@functools.cache
def renderer_params() -> dict[str, tuple[str, ...]]:
    """Parameter names each renderer takes (beyond the image), so style files are checked."""
    return {
        name: tuple(list(inspect.signature(fn).parameters)[1:])
        for name, fn in RENDERERS.items()
    }


def _where(loc: tuple) -> str:
    parts = [str(p) for i, p in enumerate(loc)
             if not (i == 1 and loc[0] == "source" and p in _UNION_TAGS)]
    return ".".join(parts) or "(file)"


def _message(error: Mapping) -> str:
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def parse_style(path: Path) -> Style:
    """One style file, with errors that name the file and the field at fault."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise StyleError(f"{path}: cannot read: {err}") from err
    except json.JSONDecodeError as err:
        raise StyleError(f"{path}: not valid JSON: {err}") from err
    try:
        return Style.model_validate(raw, context={"renderers": renderer_params()})
    except ValidationError as err:
        lines = [f"{_where(e['loc'])}: {_message(e)}" for e in err.errors()]
        raise StyleError(f"{path}: " + "; ".join(lines)) from None


def load_styles(extra_dirs: Iterable[str | Path | None] = ()) -> dict[str, Style]:
    """Bundled styles plus those in ``extra_dirs`` (None entries ignored), sorted by name."""
    found: dict[str, tuple[Style, Path]] = {}
    dirs = [BUNDLED_DIR, *(Path(d).expanduser() for d in extra_dirs if d is not None)]
    for folder in dirs:
        if not folder.is_dir():
            raise StyleError(f"style folder {folder} does not exist")
        for path in sorted(folder.glob("*.json")):
            style = parse_style(path)
            if style.name in found:
                raise StyleError(
                    f"style {style.name!r} is defined twice: {found[style.name][1]} and {path}; "
                    "rename one of them"
                )
            found[style.name] = (style, path)
    return {name: found[name][0] for name in sorted(found)}


def style_dirs(settings: Settings) -> list[Path]:
    """The user's style folders: the configured one, and the workspace's when it exists."""
    dirs = [settings.styles_dir] if settings.styles_dir is not None else []
    return unique_dirs([*dirs, *workspace_styles(settings.workspace)])


def workspace_styles(workspace_root: Path) -> list[Path]:
    """``<workspace>/styles/`` when it exists: an optional place, unlike a configured folder."""
    folder = Path(workspace_root) / WORKSPACE_STYLES
    return [folder] if folder.is_dir() else []


def unique_dirs(dirs: Iterable[Path]) -> list[Path]:
    """Folders in order, each once: the same folder named twice (a setting pointing at the
    workspace's folder) would otherwise report every style in it as a duplicate."""
    unique: list[Path] = []
    seen: set[Path] = set()
    for folder in dirs:
        folder = Path(folder)
        key = folder.expanduser().resolve()
        if key not in seen:
            seen.add(key)
            unique.append(folder)
    return unique


def styles_for(settings: Settings) -> dict[str, Style]:
    return load_styles(style_dirs(settings))


def get_style(name: str, styles: Mapping[str, Style]) -> Style:
    try:
        return styles[name]
    except KeyError:
        known = ", ".join(sorted(styles)) or "none"
        raise StyleError(f"unknown style {name!r}; known: {known}") from None


def style_texts(styles: Iterable[Style]) -> dict[str, str]:
    """``{name: prompt}``: what ``tasks.embed.embed_texts`` stores, keyed by style name."""
    return {style.name: style.prompt for style in styles}


def prompts_for(settings: Settings, names: Iterable[str] | None) -> dict[str, str]:
    """``{style: prompt}`` of the styles named (each once, in order), else of every active
    style. Unknown names fail with the registry's message."""
    registry = styles_for(settings)
    if names:
        return style_texts(get_style(name, registry) for name in dict.fromkeys(names))
    return style_texts(style for style in registry.values() if style.active)
