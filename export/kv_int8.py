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
    which is layer order (one node per layer).

    Each node becomes an If on the chunk's length. A one-token step runs the kernel on the
    int8 cache. A chunk dequantizes the live rows and runs the float kernel: ONNX Runtime's
    CPU kernel dequantizes the whole cache once per query row, so a 64-token chunk over 2,048
    rows took 255 ms for 30 layers against 100 ms on a float cache; this way it takes ~130 ms
    (docs/bench.md, "A chunk through the float kernel"). Both branches store the chunk's K/V
    rounded alike."""
    graph = model.graph
    nodes = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    if len(nodes) != len(scales):
        raise ValueError(f"{len(nodes)} GroupQueryAttention nodes for {len(scales)} layer scales")
    totals = {n.input[6] for n in nodes}
    if len(totals) != 1:
        raise ValueError(f"GroupQueryAttention nodes disagree on total_sequence_length: {totals}")
    shared = _row_split(graph, totals.pop(), list(graph.node).index(nodes[0]))
    cache_names = set()
    for i, (node, (k_scale, v_scale)) in enumerate(zip(nodes, scales, strict=True)):
        cache_names.update([node.input[3], node.input[4], node.output[1], node.output[2]])
        names = (f"kv_scale.k.{i}", f"kv_scale.v.{i}")
        for name, value in zip(names, (k_scale, v_scale), strict=True):
            graph.initializer.append(helper.make_tensor(name, TensorProto.FLOAT, [1], [value]))
            # DequantizeLinear / QuantizeLinear read a 1-D scale as per-axis: a scalar too
            graph.initializer.append(helper.make_tensor(name + ".scalar", TensorProto.FLOAT, [],
                                                        [value]))
        at = list(graph.node).index(node)
        branch = helper.make_node("If", [shared["one_row"]], list(node.output),
                                  name=f"kv_int8.{i}",
                                  then_branch=_int8_kernel(node, names, f"kv_int8.{i}.then"),
                                  else_branch=_float_kernel(node, names, shared,
                                                            f"kv_int8.{i}.else"))
        graph.node.remove(node)
        graph.node.insert(at, branch)
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name in cache_names:
            value.type.tensor_type.elem_type = TensorProto.INT8


def _row_split(graph: onnx.GraphProto, total: str, at: int) -> dict[str, str]:
    """Main-graph values every layer's If reads, computed at node `at` (the first layer's
    attention, where `total` exists): `one_row` (the chunk is one token), and as [1] int64
    `live` (rows already cached) and `total` (live + the chunk's rows)."""
    embeds = "inputs_embeds"  # [1, c, H]
    if embeds not in {i.name for i in graph.input}:
        raise ValueError("the decoder graph has no inputs_embeds input")
    out = {k: f"kv_int8.{k}" for k in ("one_row", "live", "total", "rows", "zero", "axis",
                                        "end", "q_zero")}
    graph.initializer.extend([
        helper.make_tensor(out["zero"], TensorProto.INT64, [1], [0]),
        helper.make_tensor(out["axis"], TensorProto.INT64, [1], [2]),
        helper.make_tensor(out["end"], TensorProto.INT64, [1], [2**62]),
        helper.make_tensor(out["q_zero"], TensorProto.INT8, [], [0]),
    ])
    one = helper.make_tensor("kv_int8.one", TensorProto.INT64, [1], [1])
    graph.initializer.append(one)
    head = [
        helper.make_node("Shape", [embeds], [out["rows"]], start=1, end=2),
        helper.make_node("Equal", [out["rows"], one.name], [out["one_row"]]),
        helper.make_node("Cast", [total], ["kv_int8.total64"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["kv_int8.total64", one.name], [out["total"]]),
        helper.make_node("Sub", [out["total"], out["rows"]], [out["live"]]),
    ]
    for n in reversed(head):
        graph.node.insert(at, n)
    return out


def _int8_kernel(node: onnx.NodeProto, scales: tuple[str, str], name: str) -> onnx.GraphProto:
    inputs = list(node.input) + [""] * (_SCALE_INPUTS - len(node.input))
    outs = [f"{name}.{k}" for k in ("out", "k", "v")]
    kernel = helper.make_node("GroupQueryAttention", inputs[:_SCALE_INPUTS] + list(scales), outs,
                              domain=node.domain, name=name + ".gqa")
    kernel.attribute.extend(node.attribute)
    kernel.attribute.extend([helper.make_attribute("k_quant_type", "PER_TENSOR"),
                             helper.make_attribute("v_quant_type", "PER_TENSOR"),
                             helper.make_attribute("kv_cache_bit_width", 8)])
    return helper.make_graph([kernel], name, [], _outputs(outs))


def _float_kernel(node: onnx.NodeProto, scales: tuple[str, str], shared: dict[str, str],
                  name: str) -> onnx.GraphProto:
    """Dequantize the live rows, run the float kernel, quantize the chunk's rows and put the
    cache back together around them (the rows past the chunk are the scratch rows)."""
    nodes, inputs = [], list(node.input)
    for j, which in ((3, "k"), (4, "v")):
        live = f"{name}.{which}.live"
        scale = scales[j - 3] + ".scalar"
        nodes += [helper.make_node("Slice", [node.input[j], shared["zero"], shared["live"],
                                             shared["axis"]], [live]),
                  helper.make_node("DequantizeLinear", [live, scale, shared["q_zero"]],
                                   [f"{live}.float"])]
        inputs[j] = f"{live}.float"
    present = [f"{name}.out", f"{name}.k.present", f"{name}.v.present"]
    kernel = helper.make_node("GroupQueryAttention", inputs, present, domain=node.domain,
                              name=name + ".gqa")
    kernel.attribute.extend(node.attribute)
    nodes.append(kernel)
    outs = [present[0]]
    for j, which in ((3, "k"), (4, "v")):
        base, scale = f"{name}.{which}", scales[j - 3] + ".scalar"
        nodes += [
            helper.make_node("Slice", [f"{base}.present", shared["live"], shared["end"],
                                       shared["axis"]], [f"{base}.chunk"]),
            helper.make_node("QuantizeLinear", [f"{base}.chunk", scale, shared["q_zero"]],
                             [f"{base}.chunk.q"]),
            helper.make_node("Slice", [node.input[j], shared["total"], shared["end"],
                                       shared["axis"]], [f"{base}.scratch"]),
            helper.make_node("Concat", [f"{base}.live", f"{base}.chunk.q", f"{base}.scratch"],
                             [f"{base}.cache"], axis=2),
        ]
        outs.append(f"{base}.cache")
    return helper.make_graph(nodes, name, [], _outputs(outs))


def _outputs(names: list[str]) -> list[onnx.ValueInfoProto]:
    types = (TensorProto.FLOAT, TensorProto.INT8, TensorProto.INT8)
    return [helper.make_tensor_value_info(n, t, None) for n, t in zip(names, types, strict=True)]
