"""Encoder registry: identity, image and text encoders as named plug-ins.

Plug-in modules register a factory under (role, name); ``create`` imports the module
only when asked, so importing the registry stays cheap and torch/open_clip load late.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from tasks.encoders.base import ROLES, Encoder, EncoderError, Role

# (role, name) -> "module:factory". Factories take keyword options (weights, arch, device...).
_PLUGINS: dict[tuple[Role, str], str] = {
    ("identity", "sface"): "tasks.encoders.sface:SFaceEncoder",
    ("identity", "adaface"): "tasks.encoders.adaface:AdaFaceEncoder",
    ("image", "effnet-lite0"): "tasks.encoders.effnet:EffNetLite0Encoder",
    ("image", "open_clip"): "tasks.encoders.clip:OpenClipImageEncoder",
    ("text", "minilm"): "tasks.encoders.minilm:MiniLMEncoder",
    ("text", "open_clip"): "tasks.encoders.clip:OpenClipTextEncoder",
}

# Encoders already loaded in this process, by spec (see ``load``).
_LOADED: dict[Any, Encoder] = {}

DEFAULTS: dict[Role, str] = {"identity": "sface", "image": "effnet-lite0", "text": "minilm"}


def register(role: Role, name: str, target: str) -> None:
    """Add a third-party encoder ("package.module:Factory") under a role and name."""
    if role not in ROLES:
        raise EncoderError(f"unknown encoder role {role!r}; roles are {', '.join(ROLES)}")
    _PLUGINS[(role, name)] = target


def unregister(role: Role, name: str) -> None:
    _PLUGINS.pop((role, name), None)
    for spec in [s for s in _LOADED if (s.role, s.name) == (role, name)]:
        del _LOADED[spec]


def available(role: Role | None = None) -> list[tuple[Role, str]]:
    return sorted(key for key in _PLUGINS if role is None or key[0] == role)


def _factory(role: Role, name: str) -> Callable[..., Encoder]:
    try:
        target = _PLUGINS[(role, name)]
    except KeyError:
        known = ", ".join(n for r, n in available(role)) or "none"
        raise EncoderError(f"unknown {role} encoder {name!r}; known: {known}") from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def create(role: Role, name: str | None = None, **options: Any) -> Encoder:
    """Build an encoder; options with value None are dropped so defaults apply."""
    name = name or DEFAULTS[role]
    options = {k: v for k, v in options.items() if v is not None}
    factory = _factory(role, name)
    accepted = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise EncoderError(
                f"{role} encoder {name!r} takes no option {', '.join(unknown)}; "
                f"it takes: {', '.join(accepted) or 'none'}"
            )
    encoder = factory(**options)
    if encoder.role != role:
        raise EncoderError(f"encoder {name!r} is a {encoder.role} encoder, not {role}")
    return encoder





def load(spec: Any) -> Encoder:
    """The encoder for an ``EncoderSpec``, loaded once per process and then reused.

    Models are never passed between tasks (they would be pickled and hashed); each
    worker process loads its own copy on first use.
    """
    if spec not in _LOADED:
        _LOADED[spec] = create(spec.role, spec.name, **spec.options())
    return _LOADED[spec]


__all__ = ["DEFAULTS", "Encoder", "EncoderError", "available", "create", "load", "register",
           "unregister"]
