"""This process's resident memory, now and at its peak (bytes). On a Jetson, RSS misses what
CUDA maps (see tools/samplers.py for tegrastats/NvMap); on a CPU it is the whole story."""

from __future__ import annotations

import sys

import psutil

_PROCESS = psutil.Process()


def rss_now() -> int:
    return int(_PROCESS.memory_info().rss)


def rss_peak() -> int:
    """The kernel's high-water mark (ru_maxrss), which catches peaks between samples."""
    try:
        import resource
    except ImportError:  # Windows
        return rss_now()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes; Linux: KiB
