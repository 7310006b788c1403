"""A tiny embedded workspace and a tiny random-init generator matched to its encoders.

Real components at toy sizes: procedural demo faces (3 identities x 2 photos) ingested and
embedded with the bundled encoders (SFace 128-d, EfficientNet-Lite0 1280-d, MiniLM 384-d),
and a diffusers UNet built from the "tiny" config (16x16 pixels). Builders are plain
functions so the flow tests can reuse them; encoders are cached per process, so a second
build costs only ingestion.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from schemas.encoders import EncoderSpec
from tasks.storage import Workspace

STYLES = {"test-pencil": "a pencil sketch of a face",
          "test-charcoal": "a soft charcoal drawing of a face"}
FACE_SPECS = [EncoderSpec(role="identity", name="sface"),
              EncoderSpec(role="image", name="effnet-lite0")]
TEXT_SPEC = EncoderSpec(role="text", name="minilm")
TABLES = {"identity": "emb_identity_sface_128", "image": "emb_image_effnet_lite0_1280",
          "text": "emb_text_minilm_384"}
STEPS = 2


def build_workspace(root: Path, identities: int = 3, photos: int = 2) -> Path:
    from tasks.demo.faces import make_demo_source
    from tasks.embed import embed_faces, embed_texts
    from tasks.ingest.run import ingest_source

    source = make_demo_source(root / "demo", identities=identities,
                              photos_per_identity=photos)
    workspace = Workspace.open(root / "ws")
    ingest_source(workspace, source / "photos")
    embed_faces(workspace, FACE_SPECS)
    embed_texts(workspace, STYLES, TEXT_SPEC)
    write_style_files(workspace.root)
    return workspace.root


def write_style_files(root: Path) -> None:
    """The test styles as style files in the workspace, where the style registry finds them."""
    folder = root / "styles"
    folder.mkdir(exist_ok=True)
    for name, prompt in STYLES.items():
        style = {"name": name, "prompt": prompt,
                 "source": {"kind": "paired", "sketch_style": name}}
        (folder / f"{name}.json").write_text(json.dumps(style))


def workspace_encoders(root: Path) -> tuple[dict[str, int], dict[str, str]]:
    from tasks import storage

    workspace = Workspace.open(root)
    dims = {role: int(table.rsplit("_", 1)[1]) for role, table in TABLES.items()}
    versions = {role: storage.read(workspace, table, columns=["encoder_version"])
                .column("encoder_version")[0].as_py() for role, table in TABLES.items()}
    return dims, versions


def build_generator(root: Path, dest: Path, dims: dict[str, int] | None = None,
                    nan: bool = False, spatial: str = "none", config: str = "tiny") -> Path:
    """A random-init generator (default "tiny") whose conditions match the workspace's
    encoders; ``spatial`` overrides the config's spatial input when it is not "none"."""
    import torch

    from tasks.generate.config import load_config
    from tasks.generate.networks import SketchGenerator

    found_dims, versions = workspace_encoders(root)
    loaded = load_config(config)
    if spatial != "none":
        loaded = loaded.model_copy(update={"spatial_condition": spatial})
    generator = SketchGenerator.build(loaded, {**found_dims, **(dims or {})}, versions, seed=0)
    if nan:
        with torch.no_grad():
            generator.unet.conv_out.bias.fill_(float("nan"))
    return generator.save_pretrained(dest)


def copy_workspace(base: Path, dest: Path) -> Workspace:
    shutil.copytree(base, dest)
    return Workspace.open(dest)


@pytest.fixture(scope="session")
def base_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("generate-base"))


@pytest.fixture(scope="session")
def tiny_generator(base_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_generator(base_workspace, tmp_path_factory.mktemp("generators") / "tiny")


@pytest.fixture
def gen_workspace(base_workspace: Path, tmp_path: Path) -> Workspace:
    """A private copy of the embedded workspace, so tests can write and break things."""
    return copy_workspace(base_workspace, tmp_path / "ws")
