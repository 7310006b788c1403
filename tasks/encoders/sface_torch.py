"""SFace as a differentiable torch module: an identity loss for generator training.

The onnxruntime :class:`~tasks.encoders.sface.SFaceEncoder` cannot pass gradients back to
the image, so a generator trained with an identity term (``1 - cos(SFace(x0_hat),
SFace(mugshot))``, see ../shared/METHOD.md) needs the same network in torch. The bundled
ONNX file is converted once per process with ``onnx2torch`` after three clean-ups that
``onnx2torch`` needs:

- the graph inputs no node reads are dropped and the batch made symbolic, exactly as
  :func:`~tasks.encoders.sface.batched_graph` does for onnxruntime (reused, not copied);
- the int8 weights behind ``DequantizeLinear`` (blocked, opset 21) and the ``Reshape``
  nodes that only reshape those weights are folded into float initialisers, because
  onnx2torch has no converter for blocked dequantisation and would otherwise re-run the
  dequantisation on every forward;
- the opset is declared 17: what is left (Conv, BatchNormalization, PRelu, Gemm, ...) has
  the same semantics there, and opset 17 is what onnx2torch's converters are registered for.

Preprocessing is the one SFaceEncoder applies (OpenCV's ``FaceRecognizerSF.feature()``):
the network wants RGB in 0..255 and subtracts 127.5 / scales by 1/128 inside the graph.
:func:`sface_embed` takes what a generator produces, images in [-1, 1], so it maps them to
0..255, replicates grey sketches to three channels and swaps BGR to RGB for colour input
(stored crops are BGR). The result matches onnxruntime at cosine ~1.0 (tests: >= 0.9999).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from tasks.encoders.base import EncoderError
from tasks.encoders.sface import batched_graph, default_weights

SFACE_SIZE = 112
_OPSET = 17


def _dequantize(x: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int, block: int):
    """numpy DequantizeLinear (opset 21): per-tensor, per-axis or blocked along ``axis``."""
    x = x.astype(np.float32)
    zero = np.zeros_like(scale, dtype=np.float32) if zero is None else zero.astype(np.float32)
    scale = scale.astype(np.float32)
    if scale.size == 1:
        return (x - zero.reshape(())) * scale.reshape(())
    axis = axis % x.ndim
    if block > 0:  # blocked: scale has x's shape with ceil(dim / block) along axis
        scale = np.repeat(scale, block, axis=axis).take(range(x.shape[axis]), axis=axis)
        zero = np.repeat(zero, block, axis=axis).take(range(x.shape[axis]), axis=axis)
    else:  # per-axis: a 1-D scale broadcast along axis
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (x - zero) * scale


def _fold_weights(model) -> None:
    """Replace DequantizeLinear / Reshape nodes on constant inputs by float initialisers."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type not in ("DequantizeLinear", "Reshape") or not all(
            name in constants for name in inputs
        ):
            kept.append(node)
            continue
        attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
        if node.op_type == "DequantizeLinear":
            zero = constants[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            value = _dequantize(
                constants[node.input[0]],
                constants[node.input[1]],
                zero,
                int(attrs.get("axis", 1)),
                int(attrs.get("block_size", 0)),
            )
        else:
            shape = constants[node.input[1]].astype(np.int64).tolist()
            source = constants[node.input[0]]
            if 0 in shape and not attrs.get("allowzero", 0):  # 0 copies the input dim
                shape = [source.shape[i] if s == 0 else s for i, s in enumerate(shape)]
            value = source.reshape(shape)
        constants[node.output[0]] = value.astype(np.float32)
    consumed = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(
        numpy_helper.from_array(np.ascontiguousarray(value), name)
        for name, value in constants.items()
        if name in consumed
    )
    left = [n.op_type for n in kept if n.op_type == "DequantizeLinear"]
    if left:
        raise EncoderError(f"SFace graph keeps {len(left)} DequantizeLinear on non-constants")


@functools.lru_cache(maxsize=4)
def _convert(path: str) -> torch.nn.Module:
    """ONNX -> torch once per process and file (conversion costs seconds)."""
    import onnx
    from onnx2torch import convert

    graph_bytes, _, batchable = batched_graph(path)
    if not batchable:
        raise EncoderError(f"SFace graph {path} pins activations to batch 1; cannot port it")
    model = onnx.load_from_string(graph_bytes)
    _fold_weights(model)
    del model.opset_import[:]
    model.opset_import.extend([onnx.helper.make_opsetid("", _OPSET)])
    try:
        module = convert(model)
    except Exception as exc:
        raise EncoderError(f"onnx2torch cannot convert SFace graph {path}: {exc}") from exc
    return FrozenSFace(module)


class FrozenSFace(torch.nn.Module):
    """The converted graph, pinned to eval mode and with no trainable parameters.

    ``train()`` is a no-op on purpose: if a caller registers this module inside a generator,
    ``generator.train()`` must not switch SFace's 29 BatchNorms to batch statistics (which
    would update their running means and change every vector) nor turn on its Dropout.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenSFace:
        return super().train(False)

    def forward(self, rgb255: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) 128-d vectors of RGB images in 0..255, (B, 3, 112, 112)."""
        return self.net(rgb255)


def load_sface_torch(weights: Path | None = None) -> torch.nn.Module:
    """The frozen torch SFace (eval mode, no trainable parameters), cached per process.

    Every caller gets the same module object: it is frozen, so sharing it is safe, and
    moving it with ``.to(device)`` moves it for all callers in the process.
    """
    path = Path(weights) if weights is not None else default_weights()
    if not path.is_file():
        raise EncoderError(f"SFace weights not found: {path}")
    return _convert(str(path.resolve()))


@functools.lru_cache(maxsize=8)
def sface_with_features(model: torch.nn.Module, blocks: tuple[int, ...]) -> torch.nn.Module:
    """The same frozen SFace answering (raw vectors, [block outputs]) for ``blocks`` (1..14).

    A second view of the converted graph (torch.fx), sharing its weights: one pass gives the
    vector and the early blocks' activations, and no hook is left on the module every other
    caller shares.
    """
    import copy

    import torch.fx

    net = model.net if isinstance(model, FrozenSFace) else model
    if not isinstance(net, torch.fx.GraphModule):
        raise EncoderError("SFace features need the converted (torch.fx) graph")
    graph = copy.deepcopy(net.graph)
    by_target = {n.target: n for n in graph.nodes if n.op == "call_module"}
    missing = [b for b in blocks if f"conv_{b}_relu" not in by_target]
    if missing:
        raise EncoderError(f"SFace has no block {missing[0]} (conv_<k>_relu)")
    output = next(n for n in graph.nodes if n.op == "output")
    vectors = output.args[0]
    graph.erase_node(output)
    graph.output((vectors, [by_target[f"conv_{b}_relu"] for b in blocks]))
    return FrozenSFace(torch.fx.GraphModule(net, graph))


def _network_input(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] grey or BGR (B, 1|3, 112, 112) -> the RGB 0..255 the graph reads."""
    size = (SFACE_SIZE, SFACE_SIZE)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or tuple(images.shape[2:]) != size:
        raise EncoderError(
            f"expected images (B, 1|3, {SFACE_SIZE}, {SFACE_SIZE}), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise EncoderError(f"expected float images in [-1, 1], got {images.dtype}")
    images = images.float()
    rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images.flip(1)
    return (rgb + 1.0) * 127.5


def sface_embed_and_features(model: torch.nn.Module, images: torch.Tensor,
                             blocks: tuple[int, ...]
                             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """:func:`sface_embed`'s vectors and the outputs of SFace's ``blocks``, from one pass."""
    with torch.autocast(images.device.type, enabled=False):
        vectors, features = sface_with_features(model, tuple(blocks))(_network_input(images))
    return torch.nn.functional.normalize(vectors, dim=1, eps=1e-12), list(features)


def sface_embed(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised SFace vectors (B, 128) of images in [-1, 1], differentiable in images.

    ``images`` is float (B, 1, 112, 112) grey, replicated to three channels, or
    (B, 3, 112, 112) BGR like the stored crops, swapped to the RGB the network was trained
    on. [-1, 1] maps to 0..255 linearly (x + 1) * 127.5, i.e. the uint8 pixels SFaceEncoder
    feeds; no clamping, so gradients also flow for values slightly out of range.
    """
    # SFace runs in fp32 even inside a training step's bf16 autocast: its BatchNorm and PReLU
    # constants are fp32, and the loss compares vectors whose differences are small.
    with torch.autocast(images.device.type, enabled=False):
        vectors = model(_network_input(images))
    return torch.nn.functional.normalize(vectors, dim=1, eps=1e-12)
