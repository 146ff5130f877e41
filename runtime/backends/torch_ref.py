"""PyTorch reference backend: runs DecoderStep eagerly, the oracle the graphs are tested against.

Needs torch (not transformers). Built from a DecoderStep in memory (tests, `edgekv verify`) or
from a bundle, whose ONNX initializers carry DecoderStep's parameter names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekv.export.decoder_step import DecoderStep
from edgekv.export.manifest import Manifest
from edgekv.runtime.backends.base import StepOutput
from edgekv.runtime.cache import KVCache
from edgekv.runtime.errors import BundleError

_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# Bundles exported before the fused projections carry these initializers instead.
_UNFUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _unfused_names(name: str) -> list[str]:
    """'layers.3.qkv_proj.weight' -> the q/k/v initializer names of an older bundle."""
    prefix, module, kind = name.rsplit(".", 2) if name.count(".") >= 2 else ("", "", "")
    return [f"{prefix}.{part}.{kind}" for part in _UNFUSED.get(module, ())]


class TorchBackend:
    name = "torch"

    def __init__(self, step: DecoderStep, cache: KVCache) -> None:
        self.step = step.eval()
        self.cache = cache

    @classmethod
    def from_bundle(
        cls, bundle_dir: Path, manifest: Manifest, cache: KVCache, embedding: np.ndarray
    ) -> TorchBackend:
        import onnx
        from onnx import numpy_helper

        if manifest.quant_format:
            raise BundleError(
                f"the torch backend runs fp32/fp16 bundles; this one is {manifest.dtype} "
                f"({manifest.quant_format}): use --backend ort"
            )
        model = onnx.load(str(bundle_dir / manifest.graphs["decoder"]), load_external_data=False)
        onnx.external_data_helper.load_external_data_for_model(model, str(bundle_dir))
        found = {t.name: t for t in model.graph.initializer}
        step = DecoderStep(manifest.dims, _TORCH_DTYPES[manifest.dtype], manifest.rope_table,
                           fused_norm=manifest.target == "ort",
                           cached_rope=manifest.key_rope == "cached",
                           gqa=manifest.attention == "gqa", attn_mass=manifest.attn_mass)
        state = {}
        for name in step.state_dict():
            parts = [found.get(n) for n in _unfused_names(name)]
            if name == "lm_head.weight" and manifest.embedding.shared_with_lm_head:
                state[name] = torch.from_numpy(np.array(embedding))
            elif name in found:
                state[name] = torch.from_numpy(numpy_helper.to_array(found[name]).copy())
            elif parts and all(p is not None for p in parts):  # exported before the fusion
                state[name] = torch.cat([torch.from_numpy(numpy_helper.to_array(p).copy())
                                         for p in parts])
            else:
                raise BundleError(f"decoder.onnx has no initializer {name!r} for the torch backend")
        step.load_state_dict(state, strict=True)
        return cls(step, cache)

    @torch.inference_mode()
    def run(
        self,
        inputs_embeds: np.ndarray,
        chunk_pos: np.ndarray,
        slot_pos: np.ndarray,
        slot_bias: np.ndarray,
        mass_weight: np.ndarray,
        last_only: bool = False,
    ) -> StepOutput:
        outs = self.step(
            torch.from_numpy(np.ascontiguousarray(inputs_embeds)),
            torch.from_numpy(chunk_pos),
            torch.from_numpy(self.cache.keys),
            torch.from_numpy(self.cache.values),
            torch.from_numpy(slot_pos),
            torch.from_numpy(slot_bias),
            torch.from_numpy(mass_weight),
            torch.tensor([inputs_embeds.shape[1] - 1]) if last_only else None,
        )
        # fused-attention steps add present K/V: the host cache is written by the session
        logits, new_keys, new_values, attn_mass = (o.numpy() for o in outs[:4])
        return StepOutput(logits, new_keys, new_values, attn_mass)
