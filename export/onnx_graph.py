"""Trace DecoderStep into `decoder.onnx` and lay its weights out on disk.

Weights go to `decoder.onnx.data`, except the token-embedding matrix: it is written once to
`embed.bin` (raw, row-major), which the runtime memory-maps for token lookup and, when the
model ties its embeddings, the graph's `lm_head.weight` initializer points at as external data.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from edgekv.export.decoder_step import DecoderStep
from edgekv.export.manifest import EMPTY_SLOT_BIAS

INPUTS = ["inputs_embeds", "chunk_pos", "past_keys", "past_values", "slot_pos", "slot_bias",
          "mass_weight"]
OUTPUTS = ["logits", "new_keys", "new_values", "attn_mass"]
DATA_FILE = "decoder.onnx.data"
EMBED_FILE = "embed.bin"
LM_HEAD = "lm_head.weight"
_ALIGN = 4096  # page-aligned tensors let ONNX Runtime memory-map them


def example_inputs(step: DecoderStep, budget: int, chunk: int) -> tuple[torch.Tensor, ...]:
    dims = step.dims
    dtype = step.lm_head.weight.dtype
    kv_shape = (dims.num_layers, dims.num_kv_heads, budget, dims.head_dim)
    lead = (3,) if dims.mrope_section else ()  # M-RoPE: 3 position components
    return (
        torch.zeros(1, chunk, dims.hidden_size, dtype=dtype),
        torch.arange(chunk, dtype=torch.int64).expand(*lead, chunk).contiguous(),
        torch.zeros(kv_shape, dtype=dtype),
        torch.zeros(kv_shape, dtype=dtype),
        torch.zeros(lead + kv_shape[:3], dtype=torch.int64),
        torch.full(kv_shape[:3], EMPTY_SLOT_BIAS, dtype=torch.float32),
        torch.ones(chunk, dtype=torch.float32),
    )


def trace(step: DecoderStep, budget: int, chunk: int, opset: int, path: Path) -> onnx.ModelProto:
    """Export with one dynamic axis, the chunk length c in [1, chunk]; returns the model proto."""
    c = torch.export.Dim("c", min=1, max=max(chunk, 2))
    dynamic = {name: None for name in INPUTS}
    pos_axis = 1 if step.dims.mrope_section else 0
    dynamic.update({"inputs_embeds": {1: c}, "chunk_pos": {pos_axis: c}, "mass_weight": {0: c}})
    table = {}
    if step.rope_table:
        from edgekv.export.rope_onnx import translation_table

        table = translation_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            step.eval(),
            example_inputs(step, budget, chunk),
            input_names=INPUTS,
            output_names=OUTPUTS,
            dynamic_shapes=dynamic,
            opset_version=opset,
            dynamo=True,
            optimize=False,  # keep DecoderStep parameter names (torch backend loads by name)
            verbose=False,
            custom_translation_table=table,
        )
    return program.model_proto


def save_with_shared_embedding(
    model: onnx.ModelProto, embedding: np.ndarray, shared: bool, out_dir: Path
) -> None:
    """Write decoder.onnx, decoder.onnx.data and embed.bin into `out_dir`."""
    embedding = np.ascontiguousarray(embedding)
    embedding.tofile(out_dir / EMBED_FILE)
    offset = 0
    with open(out_dir / DATA_FILE, "wb") as data:
        for tensor in model.graph.initializer:
            if shared and tensor.name == LM_HEAD:
                _point_at(tensor, EMBED_FILE, 0, embedding.nbytes)
                continue
            raw = onnx.numpy_helper.to_array(tensor).tobytes()
            if len(raw) < 1024:
                continue  # small constants stay inside the graph file
            pad = (-offset) % _ALIGN
            data.write(b"\0" * pad)
            offset += pad
            data.write(raw)
            _point_at(tensor, DATA_FILE, offset, len(raw))
            offset += len(raw)
    onnx.save_model(model, out_dir / "decoder.onnx")


def _point_at(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    tensor.ClearField("raw_data")
    for field in ("float_data", "int32_data", "int64_data", "double_data"):
        tensor.ClearField(field)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
