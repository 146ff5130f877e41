"""Export-time mapping of `edgekv::gqa` to ONNX Runtime's `com.microsoft.GroupQueryAttention`.

The contrib op's schema lives in ONNX Runtime, so it is declared here. The query input is the
packed projection (key and value left out) and `do_rotary` 1 rotates q and k at
`position_ids` from the cos/sin tables. `qk_output` 2 makes the fourth output the softmax
probabilities.
"""

from __future__ import annotations

import onnx
import onnxscript
import torch
from onnx.defs import OpSchema

from edgekv.export import gqa_op  # noqa: F401 - registers torch.ops.edgekv.gqa

_DOMAIN = "com.microsoft"
_PROBS = 2  # GroupQueryAttention's qk_output: the QK product after softmax


def _declare_schema() -> None:
    if onnx.defs.has("GroupQueryAttention", _DOMAIN):
        return
    param = OpSchema.FormalParameter
    opt = OpSchema.FormalParameterOption.Optional
    names = ["query", "key", "value", "past_key", "past_value", "seqlens_k",
             "total_sequence_length", "cos_cache", "sin_cache", "position_ids", "attention_bias"]
    types = {"seqlens_k": "M", "total_sequence_length": "M", "position_ids": "P"}
    required = {"query", "past_key", "past_value", "seqlens_k", "total_sequence_length"}
    inputs = [param(n, types.get(n, "T"), param_option=OpSchema.FormalParameterOption.Single
                    if n in required else opt) for n in names]
    attr = OpSchema.Attribute
    onnx.defs.register_schema(OpSchema(
        "GroupQueryAttention", _DOMAIN, 1,
        inputs=inputs,
        outputs=[param("output", "T"), param("present_key", "T"), param("present_value", "T"),
                 param("output_qk", "T", param_option=opt)],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""),
                          ("M", ["tensor(int32)"], ""), ("P", ["tensor(int64)"], "")],
        attributes=[attr("num_heads", OpSchema.AttrType.INT, ""),
                    attr("kv_num_heads", OpSchema.AttrType.INT, ""),
                    attr("scale", OpSchema.AttrType.FLOAT, ""),
                    attr("qk_output", OpSchema.AttrType.INT, ""),
                    attr("do_rotary", OpSchema.AttrType.INT, "")],
    ))


def translation_table() -> dict:
    """`custom_translation_table` entries for torch.onnx.export."""
    _declare_schema()
    msft = onnxscript.values.Opset(_DOMAIN, 1)
    op = onnxscript.opset18

    def group_query_attention(qkv, past_k, past_v, seqlens_k, total, cos, sin, pos, bias,  # noqa: ANN001, ANN202 - onnxscript values
                              num_heads, kv_heads, scale, with_probs=True):
        inputs = (qkv, None, None, past_k, past_v, seqlens_k, total, cos, sin, pos, bias)
        attrs = {"num_heads": num_heads, "kv_num_heads": kv_heads, "scale": scale,
                 "do_rotary": 1}
        if with_probs:
            return msft.GroupQueryAttention(*inputs, **attrs, qk_output=_PROBS, _num_outputs=4)
        # onnxscript names all four outputs; `trim_outputs` drops the fourth after export
        out, present_k, present_v, _ = msft.GroupQueryAttention(*inputs, **attrs,
                                                                _num_outputs=3)
        return out, present_k, present_v, op.Constant(value_floats=[])

    return {torch.ops.edgekv.gqa.default: group_query_attention}


def trim_outputs(model: onnx.ModelProto) -> None:
    """Drop the QK output of GroupQueryAttention nodes without `qk_output`: ONNX Runtime
    refuses the node when it is listed ("Output QK buffer was provided but qk_output attribute
    was not configured")."""
    for node in model.graph.node:
        if node.op_type == "GroupQueryAttention" and len(node.output) > 3 and not any(
                a.name == "qk_output" and a.i for a in node.attribute):
            del node.output[3:]
