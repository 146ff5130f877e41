"""`--kv-cache int8`: a gqa bundle whose cache holds int8 K/V (runtime/kv_codec.py).

ONNX Runtime's GroupQueryAttention reads such a cache itself (`k_quant_type` / `v_quant_type`
PER_TENSOR, `kv_cache_bit_width` 8, the scales as inputs 12 and 13) and quantizes the chunk it
appends. A decode step then reads a quarter of the fp32 cache's bytes. The scales are fixed
here, one per layer for keys and one for values, from the bundle's own K/V over a calibration
text: a key's scale bounds the norm of each rotary pair (RoPE turns a pair, never lengthens
it), so a key stays in range at every position it is ever turned to.

The bundle is exported and validated with a float cache first; this pass then rewrites the
cache inputs and outputs of the validated graph, as `_ship_compute` does for int4 compute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgekv.runtime.kv_codec import Q_MAX

CALIBRATION_TEXT = (Path(__file__).resolve().parent.parent / "assets" / "kv_calibration"
                    / "pride_and_prejudice_250k.txt")
_SCALE_INPUTS = 12  # GroupQueryAttention's k_scale, v_scale: inputs 12 and 13


def calibrate(bundle_dir: str | Path, ids: list[int]) -> list[list[float]]:
    """[k_scale, v_scale] per layer: the largest rotary-pair norm of the keys and the largest
    |value| of the float-cache bundle at `bundle_dir` over `ids` (at most its budget), / 127."""
    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.session import Session

    bundle = Bundle.open(bundle_dir)
    session = Session.open(bundle, policy="full")
    session.feed(ids[: bundle.manifest.budget])
    cache = session.cache
    valid = cache.valid[..., None]
    keys = cache.keys.astype(np.float64)
    half = keys.shape[-1] // 2
    pair = np.sqrt(keys[..., :half] ** 2 + keys[..., half:] ** 2)
    k_max = np.where(valid, pair, 0).max(axis=(1, 2, 3))
    v_max = np.where(valid, np.abs(cache.values), 0).max(axis=(1, 2, 3))
    # a layer whose K or V is all zeros still needs a positive scale
    return [[max(float(k), 1e-6) / Q_MAX, max(float(v), 1e-6) / Q_MAX]
            for k, v in zip(k_max, v_max, strict=True)]


def quantize_cache_io(model: onnx.ModelProto, scales: list[list[float]]) -> None:
    """Give every GroupQueryAttention node an int8 cache with these per-layer scales: its past
    and present K/V become int8 graph inputs and outputs. Nodes are taken in graph order,
    which is layer order (one node per layer)."""
    graph = model.graph
    nodes = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    if len(nodes) != len(scales):
        raise ValueError(f"{len(nodes)} GroupQueryAttention nodes for {len(scales)} layer scales")
    cache_names = set()
    for i, (node, (k_scale, v_scale)) in enumerate(zip(nodes, scales, strict=True)):
        cache_names.update([node.input[3], node.input[4], node.output[1], node.output[2]])
        names = (f"kv_scale.k.{i}", f"kv_scale.v.{i}")
        for name, value in zip(names, (k_scale, v_scale), strict=True):
            graph.initializer.append(helper.make_tensor(name, TensorProto.FLOAT, [1], [value]))
        inputs = list(node.input) + [""] * (_SCALE_INPUTS - len(node.input))
        del node.input[:]
        node.input.extend(inputs[:_SCALE_INPUTS] + list(names))
        node.attribute.extend([helper.make_attribute("k_quant_type", "PER_TENSOR"),
                               helper.make_attribute("v_quant_type", "PER_TENSOR"),
                               helper.make_attribute("kv_cache_bit_width", 8)])
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name in cache_names:
            value.type.tensor_type.elem_type = TensorProto.INT8
