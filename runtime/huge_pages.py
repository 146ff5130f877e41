"""Zeroed arrays in one memory block asking for 2 MiB pages (Linux transparent huge pages).

A decode step touches one slot per (layer, head) in a dozen [L, Hkv, capacity] arrays: at
budget 2048, 90 places 8-16 KiB apart in each, every one on its own 4 KiB page. The graph has
just streamed the weights through the TLB, so each of those pages misses it. In 2 MiB pages
the same scattered writes took 70 instead of 118 us for ten arrays here. Where huge pages are
not on offer (another OS, THP "never") this is a plain anonymous mapping: the same arrays.
"""

from __future__ import annotations

import mmap

import numpy as np

PAGE = 2 << 20
ALIGN = 64  # each array starts on a cache line


def zeros(specs: list[tuple[tuple[int, ...], np.dtype | type]]) -> list[np.ndarray]:
    """One zeroed array per (shape, dtype), all in one huge-page block."""
    sizes = [int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in specs]
    offsets, end = [], 0
    for size in sizes:
        offsets.append(end)
        end += -(-size // ALIGN) * ALIGN
    block = _block(end + PAGE)  # a page more: the arrays start on a 2 MiB boundary
    start = -np.frombuffer(block, dtype=np.uint8).ctypes.data % PAGE
    return [np.frombuffer(block, dtype=dtype, count=int(np.prod(shape)), offset=start + off)
            .reshape(shape) for (shape, dtype), off in zip(specs, offsets, strict=True)]


def _block(size: int) -> mmap.mmap | bytearray:
    size = -(-size // PAGE) * PAGE
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    if not flags:  # no anonymous private mappings here (Windows): ordinary memory
        return bytearray(size)
    block = mmap.mmap(-1, size, flags=flags)  # page aligned, zeroed by the kernel
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        try:
            block.madvise(advice)
        except OSError:  # THP compiled out: 4 KiB pages
            pass
    return block
