"""The KV buffers where the GPU computes: torch tensors, updated in place by index operations.

The host KVCache keeps the per-slot metadata (positions, counts, scores: small, read by the
policies); the K/V themselves stay here, so no step copies the cache across. Every operation is
plain torch indexing, so the same code runs on CUDA on a device and on the CPU in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DeviceKV:
    keys: torch.Tensor  # [L, Hkv, capacity, D], pre-RoPE
    values: torch.Tensor  # [L, Hkv, capacity, D]

    @classmethod
    def allocate(
        cls, num_layers: int, num_kv_heads: int, capacity: int, head_dim: int,
        dtype: torch.dtype, device: str | torch.device,
    ) -> DeviceKV:
        shape = (num_layers, num_kv_heads, capacity, head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device),
                   torch.zeros(shape, dtype=dtype, device=device))

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def _index(self, slots: torch.Tensor) -> torch.Tensor:
        slots = slots.to(device=self.device, dtype=torch.long)
        return slots.unsqueeze(-1).expand(*slots.shape, self.keys.shape[-1])

    def write(self, slots: torch.Tensor, new_keys: torch.Tensor, new_values: torch.Tensor) -> None:
        """Store a chunk's K/V ([L, Hkv, c, D]) at `slots` ([L, Hkv, c]), in place."""
        idx = self._index(slots)
        self.keys.scatter_(2, idx, new_keys.to(self.keys.dtype))
        self.values.scatter_(2, idx, new_values.to(self.values.dtype))

    def read(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V at `slots` ([L, Hkv, n]): two [L, Hkv, n, D] tensors."""
        idx = self._index(slots)
        return self.keys.gather(2, idx), self.values.gather(2, idx)

    def merge(
        self, dst: torch.Tensor, src: torch.Tensor, dst_count: torch.Tensor,
        src_count: torch.Tensor,
    ) -> None:
        """Fold the slots `src` into `dst` ([L, Hkv, n] each), weighted by the tokens each stands
        for; the graph then gives `dst` the bias log(dst_count + src_count) (DESIGN.md)."""
        kd, vd = self.read(dst)
        ks, vs = self.read(src)
        nd = dst_count.to(self.device, torch.float32).unsqueeze(-1)
        ns = src_count.to(self.device, torch.float32).unsqueeze(-1)
        w = nd / (nd + ns)
        self.write(dst, kd.float() * w + ks.float() * (1 - w),
                   vd.float() * w + vs.float() * (1 - w))
