"""An int8 KV cache (manifest `kv_quant` "int8"): the cache stores q, the value is q * scale.

One scale per layer for keys and one for values, fixed at export (`export/kv_int8.py`
calibrates them): ONNX Runtime's GroupQueryAttention reads the int8 cache as it is, so a decode
step reads a quarter of the fp32 cache's bytes. The kernel writes the chunk it attends to with
the same rounding as `encode` (round half to even, saturated), so the runtime and the kernel
store a key alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Q_MIN, Q_MAX = -128, 127


@dataclass(frozen=True)
class KVCodec:
    k_scale: np.ndarray  # [L] float32
    v_scale: np.ndarray  # [L] float32

    @classmethod
    def from_manifest(cls, manifest: Any) -> KVCodec | None:
        if not manifest.kv_quant:
            return None
        scales = np.asarray(manifest.kv_scales, dtype=np.float32).reshape(-1, 2)
        return cls(np.ascontiguousarray(scales[:, 0]), np.ascontiguousarray(scales[:, 1]))

    def encode(self, x: np.ndarray, layer: np.ndarray | int, values: bool = False) -> np.ndarray:
        """Float K (or V) [..., D] of layers `layer` (broadcast over x's leading axes) -> int8."""
        scale = (self.v_scale if values else self.k_scale)[layer]
        return self.round(x / np.asarray(scale, dtype=np.float32)[..., None])

    @staticmethod
    def round(units: np.ndarray, bounded: bool = False) -> np.ndarray:
        """Values in units of their scale (any layout) -> int8 [same shape], round half to
        even, saturated. `bounded`: no |value| is past Q_MAX, so no saturation pass."""
        q = np.empty(units.shape, dtype=np.float32)
        np.rint(units, out=q)
        if not bounded:
            np.clip(q, Q_MIN, Q_MAX, out=q)
        return q.astype(np.int8)

    def decode(self, q: np.ndarray, layer: np.ndarray | int, values: bool = False) -> np.ndarray:
        scale = (self.v_scale if values else self.k_scale)[layer]
        return q.astype(np.float32) * np.asarray(scale, dtype=np.float32)[..., None]
