"""`edgekv profile -- COMMAND`: run a command, sample its memory every `interval` seconds, and
report peak, mean and the timeline, with the phases and the plan an edgekv child recorded.
`MemoryLog` does the same from inside a process (`edgekv run --memory-log`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekv.runtime.rss import rss_peak
from edgekv.tools import phases
from edgekv.tools.samplers import Sampler, default_samplers

SamplerFactory = Callable[[int, float], list[Sampler]]
MiB = 2**20
SIGINT_GRACE_S = 0.25  # Popen.wait's own wait for a child after a KeyboardInterrupt


@dataclass
class MemoryReport:
    command: list[str]
    interval_s: float
    duration_s: float
    exit_code: int | None
    samples: list[dict[str, float]]  # {"t": seconds since start, metric: bytes, ...}
    phases: list[dict[str, Any]] = field(default_factory=list)  # {"t": seconds, "phase": name}
    plan: dict[str, int] | None = None  # the bundle's memory plan (bytes), if one was recorded
    sources: list[str] = field(default_factory=list)
    # The high-water mark of RSS an edgekv child recorded of itself at exit (bytes): it holds a
    # peak that fell between two samples, or samples a sandbox's /proc withheld.
    rss_high_water: float | None = None
    # The kernel's peak RSS of the command (bytes), from wait4's rusage when it ended: the
    # largest peak of any one process in it (the command, or a descendant it waited for), not
    # the sum over the tree the samples add up. It catches a command that ends before a second
    # sample. None where there is no wait4, or when the figure is not above the profiler's own
    # peak, which a child inherits in its count (see _kernel_peak).
    rss_kernel_peak: float | None = None

    @property
    def metrics(self) -> list[str]:
        names = {k for s in self.samples for k in s if k != "t"}
        return sorted(names | ({"rss"} if self._process_peak() is not None else set()))

    def sampled_peak(self, metric: str = "rss") -> float:
        return max((s[metric] for s in self.samples if metric in s), default=0.0)

    def _process_peak(self) -> float | None:
        """The largest single-process RSS peak known besides the samples (bytes)."""
        known = [v for v in (self.rss_high_water, self.rss_kernel_peak) if v is not None]
        return max(known) if known else None

    def peak(self, metric: str = "rss") -> float:
        """The largest of the samples (for rss: the tree's sum) and, for rss, the high-water
        marks of single processes that a sample may have missed. For a command of several
        processes at once it is a lower bound of the tree's true peak."""
        sampled = self.sampled_peak(metric)
        process = self._process_peak() if metric == "rss" else None
        return sampled if process is None else max(sampled, process)

    def mean(self, metric: str = "rss") -> float:
        values = [s[metric] for s in self.samples if metric in s]
        return sum(values) / len(values) if values else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["peak"] = {m: self.peak(m) for m in self.metrics}
        out["mean"] = {m: self.mean(m) for m in self.metrics}
        return out

    def summary_lines(self) -> list[str]:
        lines = [f"profiled {len(self.samples)} samples over {self.duration_s:.1f} s "
                 f"({', '.join(self.sources)}), exit code {self.exit_code}"]
        for metric in self.metrics:
            lines.append(f"  {metric:<10} peak {self.peak(metric) / MiB:8.1f} MiB   "
                         f"mean {self.mean(metric) / MiB:8.1f} MiB")
            if metric == "rss" and self.peak(metric) > 1.05 * self.sampled_peak(metric):
                lines.append(f"  {'':<10} (rss peak: the largest single process's high-water "
                             f"mark; the samples of the tree peaked at "
                             f"{self.sampled_peak(metric) / MiB:.1f} MiB)")
        if self.plan:
            lines.append(f"  {'plan':<10} total {self.plan['total'] / MiB:7.1f} MiB")
        lines += [f"  {mark['t']:7.2f} s  {mark['phase']}" for mark in self.phases]
        return lines

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")


def _read_all(samplers: Sequence[Sampler], t: float) -> dict[str, float]:
    sample = {"t": t}
    for sampler in samplers:
        sample.update(sampler.read())
    return sample


@dataclass
class _Events:
    marks: list[dict[str, Any]]
    plan: dict[str, int] | None
    peak_rss: float | None


def _events(path: str | Path, wall0: float) -> _Events:
    """Phase markers (seconds since start), the last plan, and the largest peak recorded in a
    marker file."""
    found = _Events([], None, None)
    for event in phases.read_events(path):
        if "phase" in event:
            found.marks.append({"t": event["t"] - wall0, "phase": event["phase"]})
        elif "plan" in event:
            found.plan = event["plan"]
        elif "peak_rss" in event:
            found.peak_rss = max(found.peak_rss or 0.0, float(event["peak_rss"]))
    return found


class _Reaper:
    """Waits for a `Popen` child with os.wait4, which hands back the child's rusage (Popen's own
    waitpid throws it away), and sets `proc.returncode` as Popen would. Only `profile_command`
    waits for the child, so Popen never reaps it behind our back."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.max_rss: float | None = None  # bytes: ru_maxrss of the child and what it waited for

    def wait(self, timeout: float | None) -> bool:
        """Wait up to `timeout` seconds (None: until it ends); whether the child has ended. Like
        Popen.wait, it polls with a delay that doubles up to 50 ms, so it returns within that of
        the end."""
        if self.proc.returncode is not None:
            return True
        if not hasattr(os, "wait4"):  # Windows
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        if timeout is None:
            return self._reap(0)
        deadline, delay = time.monotonic() + timeout, 0.0005
        while not self._reap(os.WNOHANG):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            delay = min(delay * 2, remaining, 0.05)
            time.sleep(delay)
        return True

    def _reap(self, flags: int) -> bool:
        try:
            pid, status, usage = os.wait4(self.proc.pid, flags)
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored, say): Popen's answer
            self.proc.wait()
            return True
        if pid == 0:
            return False
        # RUSAGE_BOTH of the child: its own peak and those of the descendants it waited for.
        # KiB on Linux, bytes on macOS.
        self.max_rss = float(usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024))
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # -N when killed by signal N
        return True


def _kernel_peak(reaped: float | None, inherited: float) -> float | None:
    """The child's ru_maxrss when it says something about the command (bytes), else None.

    A child counts the peak of the memory it was spawned from: on Linux exec folds the old
    address space's high-water mark into ru_maxrss, and that space is the profiler's own (vfork,
    posix_spawn) or a copy of it (fork). So `python -c pass` under a 300 MiB profiler reports
    300 MiB. `inherited` is the profiler's high-water mark read after the spawn, a bound on what
    the child can have taken over; only a figure above it was reached by the command itself.
    """
    if reaped is None or reaped <= inherited:
        return None
    return reaped


def profile_command(
    command: Sequence[str], interval: float = 0.2,
    samplers: SamplerFactory = default_samplers,
) -> MemoryReport:
    """Run `command` to completion, sampling its process tree every `interval` seconds. The rss
    peak is also the kernel's count of the command's peak when it ended (see `_kernel_peak`), so
    a command that ends between two samples still has its peak."""
    if not command:
        raise ValueError("nothing to profile: give a command after --")
    if interval <= 0:
        raise ValueError(f"the sampling interval must be positive, not {interval}")
    with tempfile.TemporaryDirectory(prefix="edgekv-profile-") as tmp:
        marker_file = Path(tmp) / "phases.jsonl"
        env = {**os.environ, phases.ENV: str(marker_file)}
        wall0, start = time.time(), time.perf_counter()
        proc = subprocess.Popen(list(command), env=env)
        inherited = float(rss_peak())  # after the spawn: a bound on what the child took over
        reaper = _Reaper(proc)
        active = samplers(proc.pid, interval)
        samples: list[dict[str, float]] = []
        try:
            while True:
                sample = _read_all(active, time.perf_counter() - start)
                if len(sample) > 1:
                    samples.append(sample)
                if reaper.wait(interval):  # returns at once when the command ends
                    break
        except KeyboardInterrupt:
            # Ctrl-C reaches the whole foreground group: as Popen.wait does, give the command a
            # moment to end of its own SIGINT before it is terminated.
            if not reaper.wait(SIGINT_GRACE_S):
                proc.terminate()
                reaper.wait(None)
        finally:
            for sampler in active:
                sampler.close()
        duration = time.perf_counter() - start
        events = _events(marker_file, wall0)
    return MemoryReport(list(command), interval, duration, proc.returncode, samples,
                        events.marks, events.plan, [s.name for s in active], events.peak_rss,
                        _kernel_peak(reaper.max_rss, inherited))


class MemoryLog:
    """Sample this process on a thread while the `with` block runs; save a report at the end.

    It also collects this process's own phase markers (it points $EDGEKV_PHASE_LOG at a file
    of its own unless a parent `edgekv profile` already did).
    """

    def __init__(self, out: str | Path, interval: float = 0.2,
                 samplers: SamplerFactory = default_samplers) -> None:
        self.out, self.interval, self.factory = Path(out), interval, samplers
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> MemoryLog:
        if not os.environ.get(phases.ENV):
            self._tmp = tempfile.TemporaryDirectory(prefix="edgekv-memlog-")
            os.environ[phases.ENV] = str(Path(self._tmp.name) / "phases.jsonl")
        self.marker_file = os.environ[phases.ENV]
        self.wall0, self.start = time.time(), time.perf_counter()
        self.active = self.factory(os.getpid(), self.interval)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        while True:
            self.samples.append(_read_all(self.active, time.perf_counter() - self.start))
            if self._stop.wait(self.interval):
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()
        for sampler in self.active:
            sampler.close()
        events = _events(self.marker_file, self.wall0)
        report = MemoryReport(["<this process>"], self.interval,
                              time.perf_counter() - self.start, None, self.samples, events.marks,
                              events.plan, [s.name for s in self.active], float(rss_peak()))
        report.save(self.out)
        if self._tmp is not None:
            os.environ.pop(phases.ENV, None)
            self._tmp.cleanup()
