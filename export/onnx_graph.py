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
from edgekv.export.manifest import (
    EMPTY_SLOT_BIAS,
    LIVE_ROWS,
    LM_HEAD,
    LOGIT_ROWS,
    POS_SHIFT,
    layer_names,
)
from edgekv.export.node_order import schedule_attn_mass

INPUTS = ["inputs_embeds", "chunk_pos", "past_keys", "past_values", "slot_pos", "slot_bias",
          "mass_weight"]
OUTPUTS = ["logits", "new_keys", "new_values", "attn_mass"]

DATA_FILE = "decoder.onnx.data"
EMBED_FILE = "embed.bin"
_ALIGN = 4096  # page-aligned tensors let ONNX Runtime memory-map them


def example_inputs(step: DecoderStep, budget: int, chunk: int) -> tuple[torch.Tensor, ...]:
    dims = step.dims
    dtype = step.lm_head.weight.dtype
    kv_shape = (dims.num_layers, dims.num_kv_heads, budget, dims.head_dim)
    # Fused attention (step.gqa) writes the chunk into scratch rows after the slots, and takes
    # each layer's buffer as [1, Hkv, rows, D], the kernel's own rank (no reshape in between).
    kv_rows = ((dims.num_layers, 1, dims.num_kv_heads, budget + chunk, dims.head_dim)
               if step.gqa else kv_shape)
    lead = (3,) if dims.mrope_section else ()  # M-RoPE: 3 position components
    return (
        torch.zeros(1, chunk, dims.hidden_size, dtype=dtype),
        torch.arange(chunk, dtype=torch.int64).expand(*lead, chunk).contiguous(),
        torch.zeros(kv_rows, dtype=dtype),
        torch.zeros(kv_rows, dtype=dtype),
        torch.zeros(kv_shape[:2] if step.cached_rope else lead + kv_shape[:3], dtype=torch.int64),
        torch.full(kv_shape[:3], EMPTY_SLOT_BIAS, dtype=torch.float32),
        torch.ones(chunk, dtype=torch.float32),
    )


class FlatInputs(torch.nn.Module):
    """Export wrapper for ONNX Runtime bundles: the inputs as a flat list, the cache as one
    input per layer ([Hkv, B, D] each, `kv_input_names`) when `per_layer`, then the optional
    `logit_rows` input when `rows`, and `live_rows` for fused attention."""

    def __init__(self, step: DecoderStep, per_layer: bool, rows: bool) -> None:
        super().__init__()
        self.step, self.per_layer, self.rows = step, per_layer, rows

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.step.dims.num_layers if self.per_layer else 1
        embeds, pos, kv, rest = args[0], args[1], args[2 : 2 + 2 * n], args[2 + 2 * n :]
        keys, values = (list(kv[:n]), list(kv[n:])) if self.per_layer else kv
        logit_rows = rest[3] if self.rows else None
        live_rows = rest[-1] if self.step.gqa else None
        return self.step(embeds, pos, keys, values, *rest[:3], logit_rows=logit_rows,
                         live_rows=live_rows)


def input_names(num_layers: int, per_layer: bool, rows: bool,
                cached_rope: bool = False, gqa: bool = False) -> list[str]:
    names = graph_inputs(cached_rope)
    if per_layer:
        kv = [n for which in ("past_keys", "past_values") for n in layer_names(which, num_layers)]
        names = names[:2] + kv + names[4:]
    return names + [LOGIT_ROWS] * rows + [LIVE_ROWS] * gqa


def output_names(num_layers: int, gqa: bool = False) -> list[str]:
    """The contract's outputs; fused-attention graphs add each layer's present K, then V
    (`present_names`), which the runtime binds to the cache buffers themselves."""
    return OUTPUTS + (present_names(num_layers) if gqa else [])


def present_names(num_layers: int) -> list[str]:
    return [n for which in ("present_keys", "present_values")
            for n in layer_names(which, num_layers)]


def graph_inputs(cached_rope: bool) -> list[str]:
    """The contract's input names; rotated-key bundles take `pos_shift` for `slot_pos`."""
    return [POS_SHIFT if n == "slot_pos" and cached_rope else n for n in INPUTS]


def trace(step: DecoderStep, budget: int, chunk: int, opset: int, path: Path,
          per_layer: bool = False, rows: bool = False) -> onnx.ModelProto:
    """Export with one dynamic axis, the chunk length c in [1, chunk]; returns the model proto.
    `per_layer`: past K/V as one input per layer (manifest `kv_layout` "per_layer"); `rows`:
    the `logit_rows` input (n in [1, chunk] rows of the chunk get logits)."""
    c = torch.export.Dim("c", min=1, max=max(chunk, 2))
    pos_axis = 1 if step.dims.mrope_section else 0
    axes = {"inputs_embeds": {1: c}, "chunk_pos": {pos_axis: c}, "mass_weight": {0: c},
            LOGIT_ROWS: {0: torch.export.Dim("n", min=1, max=max(chunk, 2))}}
    example = example_inputs(step, budget, chunk)
    module: torch.nn.Module = step.eval()
    names = input_names(step.dims.num_layers, per_layer, rows, step.cached_rope, step.gqa)
    if per_layer or rows:
        kv = tuple(example[2]) + tuple(example[3]) if per_layer else example[2:4]
        example = example[:2] + kv + example[4:] + ((torch.arange(chunk),) if rows else ())
        example += (torch.tensor([budget]),) if step.gqa else ()
        module = FlatInputs(module, per_layer, rows)
        dynamic = {"args": tuple(axes.get(name) for name in names)}
    else:
        dynamic = {name: axes.get(name) for name in INPUTS}
    if step.gqa and not per_layer:
        raise ValueError("fused attention binds the cache per layer: export with per_layer")
    table = {}
    if step.rope_table:
        from edgekv.export.rope_onnx import translation_table

        table = translation_table()
    if step.gqa:
        from edgekv.export import gqa_onnx

        table |= gqa_onnx.translation_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            example,
            input_names=names,
            output_names=output_names(step.dims.num_layers, step.gqa),
            dynamic_shapes=dynamic,
            opset_version=opset,
            dynamo=True,
            optimize=False,  # keep DecoderStep parameter names (torch backend loads by name)
            verbose=False,
            custom_translation_table=table,
        )
    model = program.model_proto
    if module is not step:
        _strip_prefix(model, "step.")  # the wrapper's attribute; weights keep DecoderStep's names
    if step.gqa:
        gqa_onnx.trim_outputs(model)
    schedule_attn_mass(model)
    return model


def _strip_prefix(model: onnx.ModelProto, prefix: str) -> None:
    renamed = {}
    for tensor in model.graph.initializer:
        if tensor.name.startswith(prefix):
            renamed[tensor.name] = tensor.name[len(prefix):]
            tensor.name = renamed[tensor.name]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for value in model.graph.value_info:
        if value.name in renamed:
            value.name = renamed[value.name]


def save_with_shared_embedding(
    model: onnx.ModelProto, embedding: np.ndarray, shared: bool, out_dir: Path,
    lm_head_input: bool = False,
) -> None:
    """Write decoder.onnx, decoder.onnx.data and embed.bin into `out_dir`. `lm_head_input`
    (with `shared`): lm_head.weight is also a graph input, an initializer ONNX Runtime may not
    treat as constant, so it does not prepack it: the pages of embed.bin are the only copy
    (int4 SmolLM2: RSS after open 429 -> 214 MiB; docs/bench.md, "Memory levers")."""
    embedding = np.ascontiguousarray(embedding)
    embedding.tofile(out_dir / EMBED_FILE)
    offset = 0
    with open(out_dir / DATA_FILE, "wb") as data:
        for tensor in model.graph.initializer:
            if shared and tensor.name == LM_HEAD:
                _point_at(tensor, EMBED_FILE, 0, embedding.nbytes)
                if lm_head_input:
                    model.graph.input.append(onnx.helper.make_tensor_value_info(
                        LM_HEAD, tensor.data_type, list(tensor.dims)))
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
