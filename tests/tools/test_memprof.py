"""`edgekv profile` on real CPU commands: the peak it reports covers what the command allocated,
phases and the plan recorded by an edgekv child come back, and the exit code passes through."""

import json
import os
import signal
import subprocess
import sys

import pytest

from edgekv.cli import main
from edgekv.profiles.planner import plan
from edgekv.runtime.bundle import Bundle
from edgekv.tools.memplot import plot_report
from edgekv.tools.memprof import MemoryLog, MemoryReport, profile_command
from edgekv.tools.samplers import ProcessTreeRss, _nvmap_bytes
from helpers import TEXT_FILE

MiB = 2**20
# Touches every page of 200 MiB (np.ones writes them), holds them for 0.6 s, and says how big
# its array was, so the test compares with the allocation the child really made.
ALLOCATE_200 = ("import numpy as np, time; a = np.ones(200 * 2**20 // 8); "
                "print(a.nbytes, flush=True); time.sleep(0.6)")
# Writes every byte of 100 MB and exits at once: over long before a second sample.
ALLOCATE_100_AND_EXIT = "a = b'x' * 100_000_000"


def _profile_in_a_fresh_process(tmp_path, *command, interval=5.0):
    """`edgekv profile` as a shell runs it: its own process, small, as the profiler of the bug
    was (a child counts the profiler's peak in its kernel figure, so under this test runner,
    hundreds of MiB, the kernel's figure for a 100 MB child would rightly be discarded)."""
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "edgekv.cli", "profile", "--interval",
                           str(interval), "--out", str(out), "--", *command],
                          capture_output=True, text=True, timeout=60)
    return done, json.loads(out.read_text())


def test_peak_covers_a_known_allocation(capfd):
    report = profile_command([sys.executable, "-c", ALLOCATE_200], interval=0.05)
    allocated = int(capfd.readouterr().out.strip())
    assert report.exit_code == 0
    assert report.peak("rss") >= allocated
    assert report.mean("rss") <= report.peak("rss")
    assert report.sources == ["rss"]
    times = [s["t"] for s in report.samples]
    assert times == sorted(times) and len(times) >= 5


def test_exit_code_and_children_are_followed():
    child = ("import subprocess, sys; "
             f"sys.exit(subprocess.call([sys.executable, '-c', {ALLOCATE_200!r}]) + 3)")
    report = profile_command([sys.executable, "-c", child], interval=0.05)
    assert report.exit_code == 3
    assert report.peak("rss") >= 200 * MiB  # the grandchild's array, counted in the tree


def test_peak_of_a_command_over_before_the_second_sample(tmp_path):
    # One sample, taken while Python starts; the peak comes from the kernel when it ends.
    done, report = _profile_in_a_fresh_process(tmp_path, sys.executable, "-c",
                                               ALLOCATE_100_AND_EXIT)
    assert done.returncode == 0 and report["exit_code"] == 0
    assert len(report["samples"]) <= 1 and report["duration_s"] < 5
    assert report["peak"]["rss"] >= 95_000_000
    assert report["rss_kernel_peak"] == report["peak"]["rss"] < 200 * MiB
    assert "largest single process" in done.stdout


def test_peak_of_a_short_grandchild_and_the_exit_code(tmp_path):
    # The kernel's figure covers the descendants the command waited for.
    child = ("import subprocess, sys; "
             f"sys.exit(subprocess.call([sys.executable, '-c', {ALLOCATE_100_AND_EXIT!r}]) + 4)")
    done, report = _profile_in_a_fresh_process(tmp_path, sys.executable, "-c", child)
    assert done.returncode == 4 and report["exit_code"] == 4
    assert report["peak"]["rss"] >= 95_000_000


def test_a_signal_that_ends_the_command_is_its_exit_code():
    report = profile_command([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"],
                             interval=5.0)
    assert report.exit_code == -9


def test_ctrl_c_lets_the_command_end_of_its_own_sigint(tmp_path):
    # Ctrl-C signals the whole foreground group; the profiler waits a moment for the command
    # to end by its SIGINT (as Popen.wait does) rather than terminating it at once.
    out = tmp_path / "report.json"
    hold = "import time; a = b'x' * 50_000_000; print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-m", "edgekv.cli", "profile", "--interval", "0.1",
                             "--out", str(out), "--", sys.executable, "-c", hold],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    report = json.loads(out.read_text())
    assert report["exit_code"] == -signal.SIGINT
    assert report["peak"]["rss"] >= 50_000_000


def test_the_profilers_own_peak_is_not_the_commands():
    # A child's ru_maxrss starts from the peak of the profiler it was spawned from: 300 MB
    # here, which `python -c pass` never had.
    ballast = b"x" * 300_000_000
    report = profile_command([sys.executable, "-c", "pass"], interval=5.0)
    assert len(ballast) and report.exit_code == 0
    assert report.rss_kernel_peak is None
    assert report.peak("rss") < 100 * MiB


def test_cli_profile_of_an_edgekv_run_reports_phases_and_plan(tmp_path, tiny_bundle, capsys):
    bundle = tiny_bundle("llama")
    out, png = tmp_path / "report.json", tmp_path / "mem.png"
    code = main(["profile", "--interval", "0.05", "--out", str(out), "--plot", str(png), "--",
                 sys.executable, "-m", "edgekv.cli", "eval", "ppl", str(bundle),
                 "--text", str(TEXT_FILE), "--tokens", "400", "--quiet"])
    assert code == 0
    report = json.loads(out.read_text())
    names = [p["phase"] for p in report["phases"]]
    assert names == ["load", "prefill", "first-eviction", "steady"]
    m = Bundle.open(bundle).manifest
    assert report["plan"] == dict(plan(m.dims, m.budget, m.chunk, m.dtype).rows())
    assert report["peak"]["rss"] > 0
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "peak" in printed and "first-eviction" in printed


def test_cli_profile_needs_a_command(capsys):
    assert main(["profile", "--"]) == 2
    assert "give the command to profile" in capsys.readouterr().err


def test_memory_log_samples_this_process(tmp_path):
    import numpy as np

    out = tmp_path / "log.json"
    with MemoryLog(out, interval=0.02):
        block = np.ones(64 * MiB // 8)
        import time

        time.sleep(0.2)
    report = json.loads(out.read_text())
    assert report["peak"]["rss"] >= block.nbytes
    assert len(report["samples"]) >= 3


def test_sampler_of_a_finished_process_reads_nothing():
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert ProcessTreeRss(proc.pid).read() == {}


class _Blind:
    """A sampler that never gets a reading, as a sandbox's /proc may arrange."""

    name = "rss"

    def read(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass


def test_peak_comes_from_the_child_when_no_sample_was_read(tiny_bundle):
    # An edgekv child records its own high-water mark at exit; that peak survives a sampler
    # that read nothing at all.
    report = profile_command([sys.executable, "-m", "edgekv.cli", "eval", "ppl",
                              str(tiny_bundle("llama")), "--text", str(TEXT_FILE),
                              "--tokens", "200", "--quiet"],
                             interval=0.05, samplers=lambda pid, interval: [_Blind()])
    assert report.samples == [] and report.exit_code == 0
    assert 30 * MiB < report.peak("rss") < 400 * MiB  # numpy + ONNX Runtime, not the parent
    assert "rss" in report.to_dict()["peak"]


def test_a_failing_child_listing_still_reads_the_root(monkeypatch):
    import psutil

    def refuse(self, recursive=False):
        raise psutil.AccessDenied(1)

    monkeypatch.setattr(psutil.Process, "children", refuse)
    rss = ProcessTreeRss(os.getpid()).read()["rss"]
    assert abs(rss - psutil.Process().memory_info().rss) < 0.2 * rss


def test_nvmap_from_meminfo_text():
    # /proc/meminfo lines of a Jetson kernel (nvgpu stack) carry NvMapMemUsed in kB.
    text = "MemTotal:        7802964 kB\nNvMapMemUsed:     412416 kB\n"
    assert _nvmap_bytes(text) == 412416 * 1024
    assert _nvmap_bytes("MemTotal:        7802964 kB\n") is None


def test_plot_without_plan_or_phases(tmp_path):
    report = MemoryReport(["x"], 0.1, 1.0, 0, [{"t": 0.0, "rss": 10 * MiB},
                                               {"t": 0.1, "rss": 20 * MiB}])
    plot_report(report, tmp_path / "plain.png")
    assert (tmp_path / "plain.png").stat().st_size > 0


@pytest.mark.parametrize("interval", [0.0, -1.0])
def test_bad_interval_is_refused(interval):
    with pytest.raises(ValueError, match="interval"):
        profile_command([sys.executable, "-c", "pass"], interval=interval)


def test_run_memory_log_records_phases_and_plan(tmp_path, tiny_bundle):
    out = tmp_path / "run.json"
    assert main(["run", str(tiny_bundle("llama")), "--prompt", "Hello there",
                 "--max-new-tokens", "8", "--memory-log", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [p["phase"] for p in report["phases"]][:3] == ["load", "prefill", "decode"]
    assert report["plan"]["total"] > 0 and report["peak"]["rss"] > 0
