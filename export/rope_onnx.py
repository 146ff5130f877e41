"""Export-time mapping of `edgekv::rope` and `edgekv::rope_packed` to ONNX Runtime's
`com.microsoft.RotaryEmbedding`.

onnxscript builds nodes only for operators whose schema onnx knows; the contrib op's schema
lives in ONNX Runtime, so it is declared here (inputs, types, the one attribute we set).
"""

from __future__ import annotations

import onnx
import onnxscript
import torch
from onnx.defs import OpSchema

from edgekv.export import rope_op  # noqa: F401 - registers torch.ops.edgekv.rope

_DOMAIN = "com.microsoft"


def _declare_schema() -> None:
    if onnx.defs.has("RotaryEmbedding", _DOMAIN):
        return
    param = OpSchema.FormalParameter
    onnx.defs.register_schema(OpSchema(
        "RotaryEmbedding", _DOMAIN, 1,
        inputs=[param("input", "T"), param("position_ids", "M"), param("cos_cache", "T"),
                param("sin_cache", "T")],
        outputs=[param("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""),
                          ("M", ["tensor(int64)"], "")],
        attributes=[OpSchema.Attribute("interleaved", OpSchema.AttrType.INT, "")],
    ))


def translation_table() -> dict:
    """`custom_translation_table` for torch.onnx.export."""
    _declare_schema()
    msft = onnxscript.values.Opset(_DOMAIN, 1)

    def rotary(x, pos, cos_table, sin_table):  # noqa: ANN001, ANN202 - onnxscript values
        return msft.RotaryEmbedding(x, pos, cos_table, sin_table, interleaved=0)

    # RotaryEmbedding takes [N, H, S, D] or [N, S, H*D] (heads inferred from the table width).
    return {torch.ops.edgekv.rope.default: rotary, torch.ops.edgekv.rope_packed.default: rotary}
