"""Our own small loader for the MobileStyleGAN inside the ``random-face`` wheel.

The wheel's own Python code cannot run here: it imports ``openvino.inference_engine``
(removed from OpenVINO; the last release that has it fails to compile this model) and
``gdown``. Its data files are fine: OpenVINO IR v10 of a mapping network (a 1x512 latent z
to a 1x512 style w) and a synthesis network (w to a 1x3x1024x1024 RGB image in -1..1). So
the wheel is installed ``--no-deps``, located without importing it, and its IR files are
read with current ``openvino``.

Choices, each measured (../shared/STACK.md):
- ``INFERENCE_PRECISION_HINT: f32``: twice as fast as the default bf16 on this CPU, and the
  reference precision; ~0.3 s a face on one thread.
- one thread per worker by default: parallelism comes from several workers, and a fixed
  thread count keeps the pixels reproducible;
- truncation toward a *fixed* mean style (the mapped mean of 4,096 latents drawn with seed
  0); the wheel averages fresh random latents at every start, so its faces never repeat.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILES = ("MappingNetwork.xml", "MappingNetwork.bin",
               "SynthesisNetwork.xml", "SynthesisNetwork.bin")
STYLE_DIM = 512
MEAN_SAMPLES = 4096
MEAN_SEED = 0
WHEEL = "random-face==2021.7.21.1"
INSTALL_HINT = (
    "synthesize-mugshots needs the optional 'synthetic' extra (OpenVINO and the "
    f"MobileStyleGAN weights of the {WHEEL} wheel). Install it with:\n"
    f"  .venv/bin/pip install --no-deps {WHEEL}\n"
    "  .venv/bin/pip install -e '.[synthetic]'\n"
    "or run `make synthetic`. (--no-deps matters: the wheel declares opencv-python, jupyter "
    "and gdown, which would clash with the pinned packages.)"
)

_CACHE: dict[tuple[str, int], FaceGenerator] = {}
_CACHE_LOCK = threading.Lock()


class SyntheticExtraMissing(RuntimeError):
    """The 'synthetic' extra is not installed; the message says how to install it."""


def model_dir() -> Path:
    """The folder of the bundled IR files, found without importing ``random_face`` (its
    ``__init__`` imports the removed OpenVINO API and fails)."""
    try:
        spec = importlib.util.find_spec("random_face")
    except (ImportError, ValueError):  # ValueError: a module blocked in sys.modules
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SyntheticExtraMissing(f"the {WHEEL} wheel is not installed.\n{INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise SyntheticExtraMissing(
            f"{folder} lacks {', '.join(missing)}: a damaged {WHEEL} install.\n{INSTALL_HINT}")
    return folder


def check_extra() -> Path:
    """Fail fast, with how to install, when OpenVINO or the weights are missing."""
    folder = model_dir()
    try:
        importlib.import_module("openvino")
    except ImportError as error:
        raise SyntheticExtraMissing(f"openvino is not importable ({error}).\n{INSTALL_HINT}"
                                    ) from None
    return folder


def weights_digest(folder: Path | None = None) -> str:
    """sha256 over the four IR files (name and bytes): the generator's identity."""
    folder = folder or model_dir()
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        digest.update(name.encode() + b"\0")
        with (folder / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def latent(seed: int, index: int, nudge: int = 0, sigma: float = 0.0) -> np.ndarray:
    """The 1x512 latent of candidate ``index`` (image ``nudge`` of it).

    Derived from (seed, index) alone, so a candidate is the same person whichever shard or
    worker draws it. Image 0 is the candidate itself; image j > 0 adds ``sigma`` times its
    own (seed, index, j) noise: the model has no noise input, so a nudge of the latent is
    the only way to a second photo, and it is a near-duplicate rather than a new pose.
    """
    z = np.random.default_rng([seed, index]).standard_normal((1, STYLE_DIM))
    if nudge:
        z = z + sigma * np.random.default_rng([seed, index, nudge]).standard_normal(z.shape)
    return z.astype(np.float32)


def to_bgr(image: np.ndarray, size: int) -> np.ndarray:
    """The network's 3xHxW RGB in -1..1 as 8-bit BGR at ``size`` (area-averaged)."""
    import cv2

    scaled = (np.clip(image, -1.0, 1.0) + 1.0) * 127.5 + 0.5
    rgb = np.clip(scaled, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if bgr.shape[0] != size:
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    return bgr


@dataclass
class FaceGenerator:
    """The two compiled networks and the mean style; one per process and thread count."""

    folder: Path
    threads: int
    digest: str
    _mapping: Any
    _synthesis: Any
    style_mean: np.ndarray
    _local: threading.local

    @classmethod
    def load(cls, threads: int = 1) -> FaceGenerator:
        import openvino as ov

        folder = check_extra()
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": int(threads)}
        mapping_model = core.read_model(str(folder / "MappingNetwork.xml"))
        mapping = core.compile_model(mapping_model, "CPU", config)
        # The mean style in one batch: the mapping network is small (8 MB), 4,096 rows ~0.1 s.
        batched = core.read_model(str(folder / "MappingNetwork.xml"))
        batched.reshape({"var": [MEAN_SAMPLES, STYLE_DIM]})
        zs = np.random.default_rng(MEAN_SEED).standard_normal((MEAN_SAMPLES, STYLE_DIM))
        styles = core.compile_model(batched, "CPU", config)(zs.astype(np.float32))[0]
        synthesis = core.compile_model(core.read_model(str(folder / "SynthesisNetwork.xml")),
                                       "CPU", config)
        return cls(folder=folder, threads=threads, digest=weights_digest(folder),
                   _mapping=mapping, _synthesis=synthesis,
                   style_mean=styles.mean(axis=0, keepdims=True).astype(np.float32),
                   _local=threading.local())

    def _requests(self) -> tuple[Any, Any]:
        """One pair of infer requests per thread: a compiled model's own call is not
        thread-safe, and threads of one worker may draw different shards at once."""
        if not hasattr(self._local, "requests"):
            self._local.requests = (self._mapping.create_infer_request(),
                                    self._synthesis.create_infer_request())
        return self._local.requests

    def style(self, z: np.ndarray, truncation: float) -> np.ndarray:
        """w = mean + psi (mapping(z) - mean): psi < 1 pulls faces toward the average face
        (fewer broken faces, but people look more alike)."""
        mapping, _ = self._requests()
        w = mapping.infer({0: z})[0]
        return (self.style_mean + np.float32(truncation) * (w - self.style_mean)).astype(
            np.float32)

    def draw(self, z: np.ndarray, truncation: float, size: int) -> np.ndarray:
        """One face as 8-bit BGR, ``size`` pixels square."""
        _, synthesis = self._requests()
        image = synthesis.infer({0: self.style(z, truncation)})[0][0]
        return to_bgr(image, size)


def load_generator(threads: int = 1) -> FaceGenerator:
    """The generator for this process, loaded once per thread count (never passed between
    tasks: compiled OpenVINO models do not pickle, and loading takes about a second)."""
    key = (str(model_dir()), int(threads))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = FaceGenerator.load(threads)
        return _CACHE[key]
