"""Send the K/V half of the host cache's writes to device buffers.

`Session.step` writes each chunk through `cache.write(slots, new_keys, new_values, ...)`. A
device backend keeps the chunk's K/V on the device, so the host cache here keeps only the slot
metadata: its K/V arrays become zero-width (no host copy of the cache, and `nbytes` says so),
and its `write` also stores the backend's device K/V at the same slots. This adapter exists
because Session and KVCache have no hook for it yet (proposed: `backend.write_kv(slots)`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from edgekv.runtime.cache import KVCache
from edgekv.runtime.device_kv import DeviceKV

LatestKV = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def route_kv_to_device(cache: KVCache, kv: DeviceKV, latest: LatestKV) -> None:
    """From now on `cache.write` puts K/V (from `latest()`) into `kv`; metadata stays on host."""
    host_write = cache.write
    empty = cache.keys.shape[:3] + (0,)
    cache.keys = np.empty(empty, dtype=cache.keys.dtype)
    cache.values = np.empty(empty, dtype=cache.values.dtype)

    def write(slots: np.ndarray, new_keys: np.ndarray, new_values: np.ndarray,
              positions: np.ndarray, **meta: object) -> None:
        keys, values = latest()
        kv.write(torch.from_numpy(np.ascontiguousarray(slots)), keys, values)
        host_write(slots, new_keys, new_values, positions, **meta)

    cache.write = write  # type: ignore[method-assign]


def host_placeholder(num_layers: int, num_kv_heads: int, c: int, dtype: np.dtype) -> np.ndarray:
    """The zero-width stand-in for a chunk's K/V in the StepOutput of a device backend."""
    return np.empty((num_layers, num_kv_heads, c, 0), dtype=dtype)
