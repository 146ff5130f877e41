"""Memory samplers, each a small object with `read() -> {metric: bytes}` and `close()`.

- `ProcessTreeRss`: resident memory of a process and all its children (psutil), everywhere.
- `NvmlMemory`: GPU memory of those processes (NVML, desktop/server GPUs) when `pynvml` is
  importable and a GPU answers.
- `TegrastatsMemory`: on a Jetson, system RAM in use from `tegrastats` plus NvMap (memory
  the GPU maps; /proc/meminfo NvMapMemUsed), because CUDA allocations there are not in RSS.
- `JtopMemory`: the same figures through jetson-stats' `jtop` service when it is installed.
Only `ProcessTreeRss` runs here (a CPU machine); the other three were written against their
documented interfaces and tested through their parsers only.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Protocol

import psutil

from edgekv.tools.tegrastats import parse_line

MiB = 2**20


class Sampler(Protocol):
    name: str

    def read(self) -> dict[str, float]: ...

    def close(self) -> None: ...


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return []
    return [root, *_children(root)]


def _children(root: psutil.Process) -> list[psutil.Process]:
    # Listing children reads every process's /proc/PID/stat; one unreadable stranger (a
    # sandbox's own process, say) makes psutil raise for the whole listing, and that must not
    # cost us the root's own figure.
    try:
        return root.children(recursive=True)
    except psutil.Error:
        return []


class ProcessTreeRss:
    """Sum of RSS over the process tree. Pages shared between processes count once per process,
    which over-counts a forking command; an edgekv run is one process."""

    name = "rss"

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.root: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self.root = None

    def read(self) -> dict[str, float]:
        if self.root is None:
            return {}
        total = 0
        for proc in [self.root, *_children(self.root)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                continue
        return {"rss": float(total)} if total else {}

    def close(self) -> None:
        pass


class NvmlMemory:
    """GPU memory used by the tree's processes (NVML). Not executed here: no GPU."""

    name = "nvml"

    def __init__(self, pid: int) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.nvml, self.pid = pynvml, pid
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                        for i in range(pynvml.nvmlDeviceGetCount())]

    def read(self) -> dict[str, float]:
        pids = {p.pid for p in _tree(self.pid)}
        used = 0
        for handle in self.handles:
            for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid in pids and proc.usedGpuMemory:
                    used += proc.usedGpuMemory
        return {"gpu": float(used)}

    def close(self) -> None:
        self.nvml.nvmlShutdown()


def _nvmap_bytes(meminfo: str) -> float | None:
    """NvMapMemUsed from /proc/meminfo text (kB), present on Jetson kernels with nvgpu."""
    for line in meminfo.splitlines():
        if line.startswith("NvMapMemUsed:"):
            return float(line.split()[1]) * 1024
    return None


class TegrastatsMemory:
    """System RAM in use (CPU + GPU share it on a Jetson) from a `tegrastats` child, read on a
    thread; and NvMap. Not executed here: no Jetson."""

    name = "tegrastats"

    def __init__(self, interval_s: float, binary: str = "tegrastats") -> None:
        self.proc = subprocess.Popen([binary, "--interval", str(max(int(interval_s * 1000), 10))],
                                     stdout=subprocess.PIPE, text=True)
        self.latest: dict[str, float] = {}
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                stats = parse_line(line)
            except ValueError:
                continue
            self.latest = {"ram_used": stats.ram_used_mb * MiB}

    def read(self) -> dict[str, float]:
        values = dict(self.latest)
        nvmap = _nvmap_bytes(Path("/proc/meminfo").read_text())
        if nvmap is not None:
            values["nvmap"] = nvmap
        return values

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


class JtopMemory:
    """RAM used and GPU-shared memory from jetson-stats' jtop service (values in kB). Not
    executed here: no Jetson."""

    name = "jtop"

    def __init__(self) -> None:
        from jtop import jtop

        self.jetson = jtop()
        self.jetson.start()

    def read(self) -> dict[str, float]:
        ram = self.jetson.memory["RAM"]
        return {"ram_used": float(ram["used"]) * 1024, "shared": float(ram["shared"]) * 1024}

    def close(self) -> None:
        self.jetson.close()


def default_samplers(pid: int, interval_s: float) -> list[Sampler]:
    """RSS always; NVML when there is a GPU; jtop, else tegrastats, on a Jetson."""
    samplers: list[Sampler] = [ProcessTreeRss(pid)]
    try:
        samplers.append(NvmlMemory(pid))
    except Exception:  # no pynvml, no driver, no GPU: NVML raises its own error types
        pass
    try:
        samplers.append(JtopMemory())
    except Exception:  # jtop not installed, or its service not running
        if shutil.which("tegrastats"):
            samplers.append(TegrastatsMemory(interval_s))
    return samplers
