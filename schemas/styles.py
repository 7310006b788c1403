"""The style model: a drawing style as a small JSON file (name, prompt, source of examples).

Styles are data so that adding one is a new file plus a backfill run, never a code change. The
source says how the generator gets training targets for the style: real sketches ingested with a
style label, or a deterministic renderer applied to the aligned photos.

Renderer names are checked against the renderers the caller knows, passed as validation context
(``{"renderers": {name: parameter names}}``): schemas import nothing from ``tasks``, so the
registry in ``tasks.styles.registry`` supplies them. Without that context the name is not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"

RendererParam = bool | int | float | str


class _Strict(BaseModel):
    # A typo in a hand-written style file must fail loudly, not fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class PairedSource(_Strict):
    """Real sketches ingested with ``style == sketch_style``, each paired with its photo."""

    kind: Literal["paired"]
    sketch_style: str = Field(min_length=1)


class RenderSource(_Strict):
    """Targets rendered from each aligned photo by a deterministic renderer."""

    kind: Literal["render"]
    renderer: str = Field(min_length=1)
    params: dict[str, RendererParam] = Field(default_factory=dict)

    @field_validator("renderer")
    @classmethod
    def _known_renderer(cls, value: str, info: ValidationInfo) -> str:
        known = _renderers(info)
        if known is not None and value not in known:
            raise ValueError(f"unknown renderer {value!r}; known: {', '.join(sorted(known))}")
        return value

    @field_validator("params")
    @classmethod
    def _known_params(cls, value: dict[str, RendererParam],
                      info: ValidationInfo) -> dict[str, RendererParam]:
        known = _renderers(info)
        renderer = info.data.get("renderer")  # absent when the renderer itself was refused
        if known is None or renderer not in known:
            return value
        unknown = sorted(set(value) - set(known[renderer]))
        if unknown:
            raise ValueError(
                f"renderer {renderer!r} takes no parameter {', '.join(unknown)}; "
                f"it takes: {', '.join(known[renderer]) or 'none'}"
            )
        return value


def _renderers(info: ValidationInfo) -> Mapping[str, tuple[str, ...]] | None:
    context = info.context or {}
    return context.get("renderers")


StyleSource = Annotated[PairedSource | RenderSource, Field(discriminator="kind")]


class Style(_Strict):
    """One drawing style; ``prompt`` is the text the text encoder turns into its condition."""

    name: str = Field(pattern=SLUG, max_length=64)
    prompt: str = Field(min_length=1)
    source: StyleSource
    # Nightly generation covers active styles; an inactive one stays trainable and loadable.
    active: bool = True
    description: str = ""
