"""Memory bandwidth of this machine and the decode speed it allows (the physical bound).

Decode of one token must read every weight once and the whole KV buffer the graph attends
over; nothing can go faster than (those bytes) / (memory bandwidth). Bandwidth is measured
here, in the run, STREAM-style: a copy of arrays far larger than the caches, split over the
benchmark's threads (numpy releases the GIL while copying), counting bytes read + written.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Bits per element of ONNX tensor types whose numpy itemsize is not their storage size.
PACKED_BITS = {"INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4, "INT2": 2, "UINT2": 2}


def measure_bandwidth_gbps(threads: int = 2, mib_per_thread: int = 256, repeats: int = 5) -> float:
    """Best-of-`repeats` copy bandwidth in GB/s (1e9 bytes), read + write counted."""
    n = mib_per_thread * 2**20 // 8
    sources = [np.ones(n) for _ in range(threads)]
    targets = [np.zeros(n) for _ in range(threads)]
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=np.copyto, args=(t, s))
                   for t, s in zip(targets, sources, strict=True)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - start)
    return 2 * threads * n * 8 / best / 1e9


@dataclass(frozen=True)
class DecodeBytes:
    """Bytes one decode step reads: weights (each initializer once) and the KV buffer."""

    weights: int
    kv: int

    @property
    def total(self) -> int:
        return self.weights + self.kv


def decode_bound_tps(bytes_per_token: int, bandwidth_gbps: float) -> float:
    return bandwidth_gbps * 1e9 / bytes_per_token


def kv_bytes(num_layers: int, num_kv_heads: int, slots: int, head_dim: int,
             bytes_per_value: float) -> int:
    """Keys and values of every layer and KV head over `slots` positions."""
    return int(2 * num_layers * num_kv_heads * slots * head_dim * bytes_per_value)


def bundle_decode_bytes(bundle_dir: str | Path) -> DecodeBytes:
    """Weights = the decoder graph's initializers (whatever their dtype: fp32, fp16, 4-bit
    blocks and their scales), counted once even where two point at the same external bytes
    (tied embeddings); KV = the bundle's whole fixed buffer, which the graph reads every step."""
    from edgekv.export.manifest import load_manifest

    bundle_dir = Path(bundle_dir)
    m = load_manifest(bundle_dir, verify=False)
    weights = graph_weight_bytes(bundle_dir / m.graphs["decoder"])
    kv_itemsize = np.dtype({"fp32": np.float32, "fp16": np.float16}.get(m.dtype, np.float32))
    per_value = 1 if m.kv_quant == "int8" else kv_itemsize.itemsize  # an int8 cache
    d = m.dims
    return DecodeBytes(weights, kv_bytes(d.num_layers, d.num_kv_heads, m.budget, d.head_dim,
                                         per_value))


def graph_weight_bytes(onnx_path: Path) -> int:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    seen: set[tuple[str, str]] = set()
    total = 0
    for t in _all_initializers(model.graph):
        external = {e.key: e.value for e in t.external_data}
        if external:
            key = (external.get("location", ""), external.get("offset", "0"))
            if key in seen:
                continue
            seen.add(key)
        total += tensor_bytes(t)
    return total


def tensor_bytes(t) -> int:  # noqa: ANN001 - onnx.TensorProto
    import onnx

    count = int(np.prod(t.dims)) if len(t.dims) else 1
    name = onnx.TensorProto.DataType.Name(t.data_type)
    if name in PACKED_BITS:
        return (count * PACKED_BITS[name] + 7) // 8
    return count * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize


def _all_initializers(graph):  # noqa: ANN001, ANN202 - onnx.GraphProto -> iterator
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_initializers(attr.g)
            for sub in attr.graphs:
                yield from _all_initializers(sub)
