"""The decoder graph's inputs and outputs against what its manifest says they are.

The manifest is not among the hashed files (export adds the validation to it last), so a
hand-edited or swapped manifest would otherwise reach the runtime and fail inside ONNX Runtime
with a shape error at the first step. Only static dimensions are compared; the chunk axis is
dynamic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekv.export.manifest import Manifest
from edgekv.runtime.errors import BundleError

# ONNX Runtime's type strings
_TYPES = {np.dtype(np.float32): "tensor(float)", np.dtype(np.float16): "tensor(float16)",
          np.dtype(np.int8): "tensor(int8)"}


@dataclass(frozen=True)
class Port:
    """One graph input or output: its name, shape (a str or None for a dynamic axis) and
    ONNX Runtime type string."""

    name: str
    shape: Sequence[int | str | None]
    type: str


def check_graph_io(manifest: Manifest, inputs: Sequence[Port], outputs: Sequence[Port],
                   kv_dtype: type, graph_dtype: type) -> None:
    """Raise a BundleError naming the first input or output of the graph that is not what
    `manifest` implies: `kv_dtype` is what the cache holds, `graph_dtype` the activations'."""
    found_in = {p.name: p for p in inputs}
    found_out = {p.name: p for p in outputs}
    d = manifest.dims
    expected: list[tuple[dict[str, Port], str, dict[int, int], Any]] = [
        (found_in, manifest.inputs["inputs_embeds"], {-1: d.hidden_size}, graph_dtype),
        (found_out, manifest.outputs["logits"], {-1: d.vocab_size}, None),
    ]
    rows = manifest.budget + manifest.scratch_rows
    kv_dims = {-1: d.head_dim, -2: rows, -3: d.num_kv_heads}
    if manifest.kv_layout != "per_layer":
        kv_dims[-4] = d.num_layers
    for which in ("past_keys", "past_values"):
        expected += [(found_in, name, kv_dims, kv_dtype)
                     for name in manifest.kv_input_names(which)]
    for ports, name, dims, dtype in expected:
        port = ports.get(name)
        if port is None:
            raise _mismatch(f"the decoder graph has no {name!r}, which the manifest names")
        for axis, size in dims.items():
            have = port.shape[axis] if len(port.shape) >= -axis else None
            if isinstance(have, int) and have != size:
                raise _mismatch(f"{name!r} has {have} at axis {axis} in the decoder graph; the "
                                f"manifest implies {size} (shape {list(port.shape)})")
        if dtype is not None and port.type != _TYPES.get(np.dtype(dtype), port.type):
            raise _mismatch(f"{name!r} is {port.type} in the decoder graph; the manifest implies "
                            f"{_TYPES[np.dtype(dtype)]}")
    table = manifest.embedding
    if np.dtype(table.dtype) != np.dtype(graph_dtype):  # embed() feeds the table's rows
        raise _mismatch(f"its embedding table is {table.dtype} and the graph computes in "
                        f"{np.dtype(graph_dtype).name}")
    # A tied table is the lm_head too (bound as an input, which ONNX Runtime lists among
    # initializers, not here): one row per logit, or the first step fails inside ONNX Runtime.
    if table.shared_with_lm_head and list(table.shape) != [d.vocab_size, d.hidden_size]:
        raise _mismatch(f"its tied embedding table is {list(table.shape)}, not [vocab "
                        f"{d.vocab_size}, hidden {d.hidden_size}]")


def _mismatch(what: str) -> BundleError:
    return BundleError(f"manifest.json does not describe its decoder graph: {what}. The "
                       "manifest was edited or belongs to another bundle; re-export the bundle")
