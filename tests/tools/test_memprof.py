"""`edgekv profile` on real CPU commands: the peak it reports covers what the command allocated,
phases and the plan recorded by an edgekv child come back, and the exit code passes through."""

import json
import os
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
