"""The PNG of `edgekv profile --plot`: measured memory over time, phase markers, and the plan
drawn beside the curve (its total as a line, its parts as a stacked bar). Needs matplotlib
(`pip install edgekv[plot]`); nothing else in edgekv does.
"""

from __future__ import annotations

from pathlib import Path

from edgekv.runtime.errors import EdgeKVError
from edgekv.tools.memprof import MemoryReport

MiB = 2**20
LABELS = {"rss": "process RSS", "gpu": "GPU memory (NVML)", "ram_used": "system RAM used",
          "nvmap": "NvMap (GPU-mapped)", "shared": "shared (jtop)"}
PLAN_COLORS = {"weights": "#4c72b0", "kv_cache": "#dd8452", "activations": "#55a868",
               "overhead": "#8c8c8c", "workspace": "#c44e52"}


def plot_report(report: MemoryReport, path: str | Path, title: str | None = None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a device or in CI
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise EdgeKVError("--plot needs matplotlib: pip install 'edgekv[plot]'") from exc

    fig, (ax, bar) = plt.subplots(1, 2, figsize=(10, 4.8), sharey=True,
                                  gridspec_kw={"width_ratios": [8, 1], "wspace": 0.05})
    for metric in report.metrics:
        points = [(s["t"], s[metric] / MiB) for s in report.samples if metric in s]
        ax.plot(*zip(*points, strict=True), label=f"{LABELS.get(metric, metric)} "
                f"(peak {report.peak(metric) / MiB:.0f} MiB)", lw=1.6)
    if report.plan:
        total = report.plan["total"] / MiB
        ax.axhline(total, ls="--", color="black", lw=1, label=f"plan total {total:.0f} MiB")
        bottom = 0.0
        for part, value in report.plan.items():
            if part == "total" or not value:
                continue
            bar.bar(0, value / MiB, bottom=bottom, color=PLAN_COLORS.get(part), width=0.6,
                    label=part)
            bottom += value / MiB
        bar.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    bar.set_xticks([0], ["plan"])
    bar.set_xlim(-0.5, 0.5)
    _mark_phases(ax, report)
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    command = [Path(report.command[0]).name, *report.command[1:]] if report.command else []
    ax.set_title(title or " ".join(command)[:100], fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _mark_phases(ax: object, report: MemoryReport) -> None:
    top = max((report.peak(m) for m in report.metrics), default=0.0) / MiB
    if report.plan:
        top = max(top, report.plan["total"] / MiB)
    ax.set_ylim(0, top * 1.3 or 1.0)  # type: ignore[attr-defined]  # room for phase labels
    for mark in report.phases:
        ax.axvline(mark["t"], color="gray", ls=":", lw=1)  # type: ignore[attr-defined]
        ax.text(mark["t"], top * 1.04, f" {mark['phase']}", rotation=90,  # type: ignore[attr-defined]
                va="bottom", ha="right", fontsize=7, color="dimgray")
