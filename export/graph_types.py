"""Element types of every tensor in an ONNX graph, without loading its weights.

ONNX shape inference leaves the outputs of some Constant nodes untyped; their type is read from
the attribute that holds the value, so that every node's inputs can be checked by type.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

# Constant attributes that carry their value without a TensorProto, and the type they imply.
_CONSTANT_ATTR_TYPES = {
    "value_float": TensorProto.FLOAT, "value_floats": TensorProto.FLOAT,
    "value_int": TensorProto.INT64, "value_ints": TensorProto.INT64,
    "value_string": TensorProto.STRING, "value_strings": TensorProto.STRING,
}


def type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type)


def tensor_types(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor name -> ONNX type name ('FLOAT', 'INT64', ...) for every typed tensor."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    g = inferred.graph
    types: dict[str, int] = {}
    for info in [*g.input, *g.output, *g.value_info]:
        if info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for node in g.node:
        if node.op_type == "Constant" and node.output[0] not in types:
            types[node.output[0]] = constant_type(node)
    return {name: type_name(t) for name, t in types.items() if t}


def constant_type(node: onnx.NodeProto) -> int:
    for attr in node.attribute:
        if attr.name in ("value", "sparse_value"):
            return attr.t.data_type if attr.name == "value" else attr.sparse_tensor.values.data_type
        if attr.name in _CONSTANT_ATTR_TYPES:
            return _CONSTANT_ATTR_TYPES[attr.name]
    return TensorProto.UNDEFINED
