"""The ONNX-TensorRT parser's operator support list for one TensorRT version, kept as data.

The list lives in `export/tensorrt-<version>.json` (see its `source` entry for where it came
from); this module only reads it, so `edgekv check` needs neither TensorRT nor a GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from edgekv.runtime.errors import EdgeKVError

# ONNX TensorProto data type names -> the names the onnx-tensorrt support matrix uses.
ONNX_TO_TRT_TYPE = {
    "FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "DOUBLE": "DOUBLE",
    "INT32": "INT32", "INT64": "INT64", "INT8": "INT8", "UINT8": "UINT8", "BOOL": "BOOL",
    "FLOAT8E4M3FN": "FP8", "INT4": "INT4",
}


@dataclass(frozen=True)
class OpSupport:
    types: frozenset[str]
    restrictions: str = ""
    constant_inputs: tuple[int, ...] = ()  # inputs the parser needs as build-time constants


@dataclass(frozen=True)
class TrtSupport:
    target: str
    opset_min: int
    opset_max: int
    ops: dict[str, OpSupport]
    source: dict[str, Any] = field(default_factory=dict)


def available_targets() -> list[str]:
    files = resources.files("edgekv.export").iterdir()
    return sorted(f.name[: -len(".json")] for f in files if f.name.startswith("tensorrt-")
                  and f.name.endswith(".json"))


def load_support(target: str) -> TrtSupport:
    """The support table for `target`, e.g. 'tensorrt-10.3'."""
    if target not in available_targets():
        raise EdgeKVError(
            f"unknown --target {target!r}; known: {', '.join(available_targets())}"
        )
    raw = json.loads(resources.files("edgekv.export").joinpath(f"{target}.json").read_text())
    ops = {
        name: OpSupport(frozenset(entry["types"]), entry.get("restrictions", ""),
                        tuple(entry.get("constant_inputs", ())))
        for name, entry in raw["ops"].items()
    }
    return TrtSupport(raw["target"], raw["opset_min"], raw["opset_max"], ops, raw["source"])
