"""A small ingested + embedded demo workspace, built once per test session and copied per test.

Real bundled encoders (SFace, EfficientNet-Lite0, MiniLM) on procedurally drawn faces: building
costs ~15 s on 2 busy cores, so every generator test module shares one template and copies it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from schemas.encoders import EncoderSpec

IDENTITY = EncoderSpec(role="identity", name="sface")
IMAGE = EncoderSpec(role="image", name="effnet-lite0")
TEXT = EncoderSpec(role="text", name="minilm")
IDENTITIES = 4
PHOTOS = 2

_template: Path | None = None


def demo_template(factory: pytest.TempPathFactory) -> Path:
    """4 demo identities x 2 photos + 1 paired "demo-pencil" sketch each, embedded, with the
    bundled styles' prompt vectors."""
    global _template
    if _template is None:
        from tasks.demo.faces import make_demo_source
        from tasks.embed import embed_faces, embed_texts
        from tasks.ingest.run import ingest_source
        from tasks.storage import Workspace
        from tasks.styles.registry import load_styles, style_texts

        base = factory.mktemp("demo-template")
        source = make_demo_source(base / "source", identities=IDENTITIES,
                                  photos_per_identity=PHOTOS)
        workspace = Workspace.open(base / "workspace")
        ingest_source(workspace, source / "photos")
        ingest_source(workspace, source / "pairs.csv")
        embed_faces(workspace, [IDENTITY, IMAGE])
        embed_texts(workspace, style_texts(load_styles().values()), TEXT)
        _template = workspace.root
    return _template


def copy_workspace(template: Path, target: Path) -> Path:
    shutil.copytree(template, target)
    return target


@pytest.fixture
def single_thread():
    """Tiny models gain nothing from threads, and on shared cores the spinning costs ~5x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
