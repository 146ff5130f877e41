"""What every family adapter provides, and the shared extraction for Llama-shaped decoders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from edgekv.export.decoder_step import ACTIVATIONS
from edgekv.export.manifest import DecoderDims
from edgekv.runtime.errors import ModelError

# Our parameter names (DecoderStep) -> HF names under the language model's `layers.{i}`; a
# tuple is concatenated along the output rows (DecoderLayer's fused projections).
LAYER_WEIGHTS: dict[str, str | tuple[str, ...]] = {
    "input_norm.weight": "input_layernorm.weight",
    "qkv_proj.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                        "self_attn.v_proj.weight"),
    "o_proj.weight": "self_attn.o_proj.weight",
    "post_norm.weight": "post_attention_layernorm.weight",
    "gate_up_proj.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "down_proj.weight": "mlp.down_proj.weight",
}
QKV_BIASES = {
    "qkv_proj.bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
}
O_BIAS = {"o_proj.bias": "self_attn.o_proj.bias"}
MLP_BIASES = {"gate_up_proj.bias": ("mlp.gate_proj.bias", "mlp.up_proj.bias"),
              "down_proj.bias": "mlp.down_proj.bias"}
QK_NORMS = {"q_norm.weight": "self_attn.q_norm.weight", "k_norm.weight": "self_attn.k_norm.weight"}


@dataclass(frozen=True)
class LlamaShapedAdapter:
    """A decoder-only text model with the Llama block layout (pre-norm, GQA, SwiGLU, RoPE).

    A family file subclasses this and sets `model_types` and the two switches; anything with
    another block layout implements `dims` and `weights` itself.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    qkv_bias: ClassVar[bool] = False
    qk_norm: ClassVar[bool] = False

    def language_model(self, model: Any) -> Any:
        """The module that holds `layers`, `norm`, `embed_tokens` and `rotary_emb`."""
        return model.model

    def text_config(self, model: Any) -> Any:
        """The config holding the language model's sizes (a VLM's `text_config`)."""
        return model.config

    def block_flags(self, model: Any) -> tuple[bool, bool]:
        """(q/k/v biases, q/k norms) of the decoder blocks."""
        return self.qkv_bias, self.qk_norm

    def biases(self, model: Any) -> tuple[bool, bool, bool]:
        """(q/k/v, o, MLP) biases, as the first block has them: a family's own switch, or a
        config that turns them on (Llama's `attention_bias`, `mlp_bias`)."""
        block = self.language_model(model).layers[0]
        attn, mlp = block.self_attn, block.mlp
        qkv = self.block_flags(model)[0] or attn.q_proj.bias is not None
        mlp_bias = {p.bias is not None for p in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)}
        if len(mlp_bias) > 1:
            raise ModelError("MLP projections with a bias on some and not others are not "
                             "supported")
        return qkv, attn.o_proj.bias is not None, mlp_bias.pop()

    def sliding_window(self, model: Any) -> int | None:
        """How many tokens back the model's attention reaches in any layer (`sliding_window`,
        where the config turns it on); None: every layer sees the whole context."""
        cfg = self.text_config(model)
        window = getattr(cfg, "sliding_window", None)
        layer_types = getattr(cfg, "layer_types", None)
        if layer_types is not None and "sliding_attention" not in layer_types:
            return None  # Qwen2 and Qwen3 name the sliding layers; none here
        if getattr(cfg, "use_sliding_window", True) is False:
            return None
        return int(window) if window else None

    def dims(self, model: Any) -> DecoderDims:
        cfg = self.text_config(model)
        qk_norm = self.block_flags(model)[1]
        qkv_bias, o_bias, mlp_bias = self.biases(model)
        if cfg.hidden_act not in ACTIVATIONS:
            raise ModelError(f"hidden_act {cfg.hidden_act!r} is not supported; supported: "
                             f"{', '.join(ACTIVATIONS)}")
        lm = self.language_model(model)
        rope = getattr(lm, "rotary_emb", None)
        if rope is None:
            raise ModelError(f"{type(model).__name__} has no rotary embedding module")
        rope_params = getattr(cfg, "rope_parameters", None)
        rope_type = (rope_params or {}).get("rope_type", "default")
        if rope_type in ("dynamic", "longrope"):
            raise ModelError(
                f"rope_type {rope_type!r} changes with the sequence length; edgekv bakes one "
                "rotary table into the graph and supports static rope types only"
            )
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return DecoderDims(
            num_layers=cfg.num_hidden_layers,
            hidden_size=cfg.hidden_size,
            num_heads=cfg.num_attention_heads,
            num_kv_heads=getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
            head_dim=head_dim,
            intermediate_size=cfg.intermediate_size,
            vocab_size=cfg.vocab_size,
            rms_norm_eps=float(cfg.rms_norm_eps),
            rope_inv_freq=[float(f) for f in rope.inv_freq.float().tolist()],
            rope_attention_scaling=float(getattr(rope, "attention_scaling", 1.0)),
            rope_type=rope_type,
            max_position_embeddings=int(getattr(cfg, "max_position_embeddings", 0) or 0),
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            mlp_bias=mlp_bias,
            qk_norm=qk_norm,
            hidden_act=cfg.hidden_act,
            tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        )

    def weights(self, model: Any) -> dict[str, torch.Tensor]:
        """DecoderStep's state dict, taken from the HF model (copied only where fused)."""
        lm = self.language_model(model)
        names = dict(LAYER_WEIGHTS)
        qk_norm = self.block_flags(model)[1]
        for present, extra in zip(self.biases(model), (QKV_BIASES, O_BIAS, MLP_BIASES),
                                  strict=True):
            if present:
                names.update(extra)
        if qk_norm:
            names.update(QK_NORMS)
        hf = lm.state_dict()
        out: dict[str, torch.Tensor] = {}
        for i in range(len(lm.layers)):
            for ours, theirs in names.items():
                parts = [hf[f"layers.{i}.{t}"] for t in
                         (theirs if isinstance(theirs, tuple) else (theirs,))]
                out[f"layers.{i}.{ours}"] = torch.cat(parts) if len(parts) > 1 else parts[0]
        out["norm.weight"] = hf["norm.weight"]
        out["lm_head.weight"] = model.get_output_embeddings().weight
        return out

    def embeddings(self, model: Any) -> torch.Tensor:
        return model.get_input_embeddings().weight
