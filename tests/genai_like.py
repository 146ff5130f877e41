"""A tiny random decoder with onnxruntime-genai's graph contract (what its model builder
writes): input_ids + attention_mask + past_key_values.N.key/value in, logits + present.N.* out,
GroupQueryAttention whose past and present share one buffer, and genai_config.json beside it.
The bench's same-process driver runs such a directory; the real builder needs its own venv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HEADS, KV_HEADS, HEAD = 4, 2, 16  # GroupQueryAttention on the CPU: head size a multiple of 16
HIDDEN = HEADS * HEAD


def write(directory: Path, vocab: int, layers: int = 2, share_buffer: bool = True,
          seed: int = 0, fp16: bool = False) -> Path:
    """fp16: weights, K/V and logits in float16, as onnxruntime-genai builds for GPUs."""
    rng = np.random.default_rng(seed)
    dtype, elem = (np.float16, TensorProto.FLOAT16) if fp16 else (np.float32, TensorProto.FLOAT)
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "embed": rng.normal(0, 1, (vocab, HIDDEN)).astype(dtype),
        "lm_head": rng.normal(0, 0.2, (HIDDEN, vocab)).astype(dtype),
        "cos": np.cos(np.outer(np.arange(4096), 1e-2 * np.arange(HEAD // 2))).astype(dtype),
        "sin": np.sin(np.outer(np.arange(4096), 1e-2 * np.arange(HEAD // 2))).astype(dtype),
        "one": np.array(1, np.int32), "axis1": np.array([1], np.int64),
    }.items()]
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["h0"]),
        helper.make_node("ReduceSum", ["attention_mask", "axis1"], ["mask_sum"], keepdims=0),
        helper.make_node("Cast", ["mask_sum"], ["mask_sum32"], to=TensorProto.INT32),
        helper.make_node("Sub", ["mask_sum32", "one"], ["seqlens_k"]),
        helper.make_node("Shape", ["attention_mask"], ["mask_shape"], start=1, end=2),
        helper.make_node("Cast", ["mask_shape"], ["total1"], to=TensorProto.INT32),
        helper.make_node("Squeeze", ["total1"], ["total"]),
    ]
    kv = [1, KV_HEADS, "max", HEAD]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "s"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, "t"])]
    outputs = [helper.make_tensor_value_info("logits", elem, [1, "s", vocab])]
    h = "h0"
    for i in range(layers):
        qkv = rng.normal(0, 0.2, (HIDDEN, (HEADS + 2 * KV_HEADS) * HEAD)).astype(dtype)
        out = rng.normal(0, 0.2, (HIDDEN, HIDDEN)).astype(dtype)
        inits += [numpy_helper.from_array(qkv, f"qkv{i}"), numpy_helper.from_array(out, f"o{i}")]
        nodes += [
            helper.make_node("MatMul", [h, f"qkv{i}"], [f"qkv_out{i}"]),
            helper.make_node("GroupQueryAttention",
                             [f"qkv_out{i}", "", "", f"past_key_values.{i}.key",
                              f"past_key_values.{i}.value", "seqlens_k", "total", "cos", "sin"],
                             [f"attn{i}", f"present.{i}.key", f"present.{i}.value"],
                             domain="com.microsoft", num_heads=HEADS, kv_num_heads=KV_HEADS,
                             do_rotary=1, scale=HEAD ** -0.5),
            helper.make_node("MatMul", [f"attn{i}", f"o{i}"], [f"proj{i}"]),
            helper.make_node("Add", [h, f"proj{i}"], [f"h{i + 1}"]),
        ]
        h = f"h{i + 1}"
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", elem, kv))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", elem, kv))
    nodes.append(helper.make_node("MatMul", [h, "lm_head"], ["logits"]))
    graph = helper.make_graph(nodes, "genai_like", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "model.onnx")
    config = {"model": {"vocab_size": vocab, "decoder": {
        "filename": "model.onnx", "head_size": HEAD, "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": layers,
        "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                   "past_key_names": "past_key_values.%d.key",
                   "past_value_names": "past_key_values.%d.value"},
        "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value"}}},
        "search": {"past_present_share_buffer": share_buffer}}
    (directory / "genai_config.json").write_text(json.dumps(config))
    return directory


def reference_logits(directory: Path, ids: list[int]) -> np.ndarray:
    """The graph's logits [len(ids), V] computed in numpy from its weights: causal attention,
    rotary on the first and second halves of each head, query heads grouped on KV heads."""
    model = onnx.load(directory / "model.onnx")
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    n = len(ids)
    cos, sin = w["cos"][:n, None, :], w["sin"][:n, None, :]

    def rotate(x: np.ndarray) -> np.ndarray:  # [n, heads, HEAD]
        a, b = x[..., : HEAD // 2], x[..., HEAD // 2 :]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)

    h = w["embed"][ids]
    layers = sum(name.startswith("qkv") for name in w)
    causal = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(layers):
        qkv = h @ w[f"qkv{i}"]
        q = rotate(qkv[:, :HIDDEN].reshape(n, HEADS, HEAD))
        k = rotate(qkv[:, HIDDEN : HIDDEN + KV_HEADS * HEAD].reshape(n, KV_HEADS, HEAD))
        v = qkv[:, HIDDEN + KV_HEADS * HEAD :].reshape(n, KV_HEADS, HEAD)
        group = HEADS // KV_HEADS
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) * HEAD ** -0.5 + causal
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        h = h + np.einsum("hqk,khd->qhd", p, v).reshape(n, HIDDEN) @ w[f"o{i}"]
    return h @ w["lm_head"]
