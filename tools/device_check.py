"""Run on a Jetson: build the engines, run one prompt in TensorRT and in ONNX Runtime (CPU),
print the logit difference, tokens/s and peak memory, and write a JSON report.

    python -m edgekv.tools.device_check BUNDLE [--fp16] [--report device_check.json]

This is how the TensorRT path is verified; it has NOT been run in this project's CI (no
TensorRT, no GPU there). Without TensorRT it stops at once with the line saying what to install.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekv.runtime.errors import EdgeKVError
from edgekv.runtime.trt_import import import_tensorrt

PROMPT = ("The camera watches the loading dock. A forklift enters from the left, stops, and a "
          "worker checks the pallet. Describe what happens next in one sentence:")


@dataclass
class BackendRun:
    backend: str
    prefill_tokens: int
    generated_tokens: int
    tokens_per_s: float  # generated tokens per second (decode, one token per call)
    text: str


@dataclass
class DeviceReport:
    bundle: str
    tensorrt_version: str
    precision: str
    max_abs_logit_diff: float  # prompt logits, TensorRT vs ONNX Runtime CPU
    runs: list[BackendRun]
    peak_rss_mb: float
    peak_gpu_used_mb: float  # device-wide used memory (unified on a Jetson) after each run


def prompt_logits_and_decode(bundle, backend: str, ids: list[int], new_tokens: int):  # noqa: ANN001, ANN201
    from edgekv.runtime.sampler import Sampler
    from edgekv.runtime.session import Session

    session = Session.open(bundle, policy="full", backend=backend)
    parts: list[np.ndarray] = []
    last = session.feed(ids, on_chunk=lambda _o, logits: parts.append(logits.copy()))
    start = time.perf_counter()
    out = list(session.generate(last, new_tokens, Sampler(temperature=0.0)))
    rate = len(out) / max(time.perf_counter() - start, 1e-9)
    run = BackendRun(backend, len(ids), len(out), rate, bundle.text.decode(out))
    used = gpu_used_mb()  # while the session (engine, KV, buffers) is still alive
    return np.concatenate(parts), run, used


def gpu_used_mb() -> float:
    import torch

    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="device_check", description=__doc__.split("\n")[0])
    p.add_argument("bundle")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--workspace", type=int, default=None, help="MiB")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--report", default="device_check.json")
    args = p.parse_args(argv)
    try:
        report = check(args)
    except EdgeKVError as exc:
        print(f"edgekv: error: {exc}", file=sys.stderr)
        return 2
    Path(args.report).write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(f"max |logit diff| TensorRT vs ORT CPU: {report.max_abs_logit_diff:.3e}")
    for run in report.runs:
        print(f"{run.backend:<4} {run.tokens_per_s:8.1f} tokens/s  {run.text!r}")
    print(f"peak RSS {report.peak_rss_mb:.0f} MiB, peak GPU used {report.peak_gpu_used_mb:.0f} "
          f"MiB; report written to {args.report}")
    return 0


def check(args: argparse.Namespace) -> DeviceReport:
    trt = import_tensorrt()  # fail first, in one line, when TensorRT is missing
    from edgekv.runtime.build_options import resolve_options
    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.engine_build import build_bundle

    manifest = build_bundle(args.bundle, resolve_options(args.fp16, args.workspace, None))
    bundle = Bundle.open(args.bundle)
    ids = bundle.text.encode(args.prompt)[: manifest.budget - args.new_tokens]
    trt_logits, trt_run, trt_used = prompt_logits_and_decode(bundle, "trt", ids, args.new_tokens)
    cpu_logits, cpu_run, cpu_used = prompt_logits_and_decode(bundle, "ort", ids, args.new_tokens)
    return DeviceReport(
        bundle=str(args.bundle),
        tensorrt_version=trt.__version__,
        precision=manifest.engines["precision"],
        max_abs_logit_diff=float(np.abs(trt_logits - cpu_logits).max()),
        runs=[trt_run, cpu_run],
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        peak_gpu_used_mb=max(trt_used, cpu_used),
    )


if __name__ == "__main__":
    sys.exit(main())
