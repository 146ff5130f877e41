"""This process's resident memory, now and at its peak (bytes). On a Jetson, RSS misses what
CUDA maps (see tools/samplers.py for tegrastats/NvMap); on a CPU it is the whole story."""

from __future__ import annotations

import sys

import psutil

_PROCESS = psutil.Process()


def rss_now() -> int:
    return int(_PROCESS.memory_info().rss)


def rss_peak() -> int:
    """The kernel's high-water mark of this process's RSS, which catches peaks between samples.

    Linux: VmHWM of /proc/self/status, which starts afresh at exec. Not ru_maxrss there: a
    child that Python's subprocess started through vfork inherits in it the peak of its parent
    (a 500 MiB test runner made a 78 MiB run report 500 MiB).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return rss_now()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes; else KiB
