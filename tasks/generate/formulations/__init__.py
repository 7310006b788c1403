"""Formulations: how noise is added to a sketch and removed again, the diffusers way.

A formulation answers "make x_t from a clean sketch (and a start image)", "what does the net
predict, and the loss", and "sample"; ``SketchGenerator`` holds the nets and the condition
tokens, and the training loop, EMA, checkpoints, shards and provenance call the formulation
through this one seam without branching on its name. A new formulation is one module here,
one line in ``FORMULATIONS`` and one config naming it.

This package's own module is the registry of names only: it imports no formulation and no
config, so the config can check a name against it without importing torch, and the
formulations (``base.build_formulation``) stand above both.
"""

from __future__ import annotations

from collections.abc import Mapping

from tasks.styles.rendering import RENDERERS

FORMULATIONS: dict[str, str] = {
    "ddpm": "tasks.generate.formulations.ddpm:DDPM",
    "bridge": "tasks.generate.formulations.bridge:Bridge",
}

# The most sampling noise (eta) a formulation takes: DDIM's eta interpolates between DDIM
# (0) and DDPM (1); a bridge may add more than its posterior's noise (diversity).
MAX_ETA: dict[str, float] = {"ddpm": 1.0}

# Start images a bridge can begin from: the aligned photo's luma, or a registered renderer.
GREY_START = "grey"


def check_eta(kind: str, eta: float) -> None:
    """Refuse sampling noise a formulation does not define, wherever eta is set."""
    limit = MAX_ETA.get(kind)
    if limit is not None and eta > limit:
        raise ValueError(f"eta {eta} is more than a {kind} generator takes (at most {limit}); "
                         f"only a bridge samples with eta above 1")


def check_style_eta(kind: str, style_eta: Mapping[str, float]) -> None:
    """``check_eta`` for each style's own noise, naming the style (a config's ``style_eta``
    at load, and what ``generate`` resolves from its option and the settings)."""
    for style, eta in style_eta.items():
        if not style:
            raise ValueError("style_eta: a style name is empty")
        try:
            if eta < 0:
                raise ValueError(f"eta {eta} is below 0")
            check_eta(kind, eta)
        except ValueError as error:
            raise ValueError(f"style_eta[{style!r}]: {error}") from error


def known_formulations() -> list[str]:
    return sorted(FORMULATIONS)


def known_starts() -> list[str]:
    return sorted([GREY_START, *RENDERERS])
