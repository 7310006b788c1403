"""Which encoder to use for a role, as data a flow parameter or settings file can carry."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Role = Literal["identity", "image", "text"]


class EncoderSpec(BaseModel):
    """A registry name plus its options; hashable so a process can cache the loaded model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    name: str
    weights: str | None = None
    arch: str | None = None
    config: str | None = None
    device: str | None = None

    def options(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump(exclude={"role", "name"}).items() if v}

    def label(self) -> str:
        extra = f" ({self.arch})" if self.arch else ""
        return f"{self.role}:{self.name}{extra}"
