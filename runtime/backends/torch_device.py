"""The PyTorch reference with its KV cache resident on a torch device (CUDA, or CPU here).

Same DecoderStep as the `torch` backend, but the past K/V are DeviceKV tensors written in place
through the host cache's routing, exactly as the TensorRT and ORT-GPU backends do. On the CPU
it is how this project's CI exercises the device-resident cache path end to end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekv.export.manifest import Manifest
from edgekv.runtime.backends.base import StepOutput
from edgekv.runtime.backends.device_buffers import TORCH_DTYPES
from edgekv.runtime.backends.kv_routing import host_placeholder, route_kv_to_device
from edgekv.runtime.backends.torch_ref import TorchBackend
from edgekv.runtime.cache import KVCache
from edgekv.runtime.device_kv import DeviceKV


class TorchDeviceBackend:
    name = "torch-device"

    def __init__(self, bundle_dir: Path, manifest: Manifest, cache: KVCache,
                 embedding: np.ndarray, device: str = "cuda",
                 last_logits_only: bool = False) -> None:
        self.step = TorchBackend.from_bundle(bundle_dir, manifest, cache, embedding).step
        self.step.to(device)
        self.device = torch.device(device)
        d = manifest.dims
        self.kv = DeviceKV.allocate(d.num_layers, d.num_kv_heads, manifest.budget, d.head_dim,
                                    TORCH_DTYPES[manifest.dtype], device)
        self.last_logits_only = last_logits_only
        self._latest: tuple[torch.Tensor, torch.Tensor] | None = None
        self._kv_dtype = cache.keys.dtype
        route_kv_to_device(cache, self.kv, lambda: self._latest)

    def _dev(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

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
        logits, new_k, new_v, mass = self.step(
            self._dev(inputs_embeds), self._dev(chunk_pos), self.kv.keys, self.kv.values,
            self._dev(slot_pos), self._dev(slot_bias), self._dev(mass_weight))
        self._latest = (new_k, new_v)
        c = inputs_embeds.shape[1]
        logits = logits[:, -1:] if self.last_logits_only else logits
        kv = host_placeholder(new_k.shape[0], new_k.shape[1], c, self._kv_dtype)
        return StepOutput(logits.cpu().numpy(), kv, kv, mass.cpu().numpy())
