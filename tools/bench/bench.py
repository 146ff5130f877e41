"""One benchmark run: bandwidth; the speed workload of every runner (edgekv's fp32 and int4
bundles, then each peer), in `rounds` that interleave them; then each runner's quality and long
stream.

Nothing runs concurrently: every measurement is a child process alone on the machine's
threads, so the numbers of one run are comparable with each other. With several rounds a
runner's speed is the median of its rounds, so a slow minute of a shared machine lands on
every runner's round rather than on one runner's whole measurement.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekv.tools.bench import membw
from edgekv.tools.bench.peers import PEERS, Setup, SetupError, prepare
from edgekv.tools.bench.report import SPEEDS, Result, build_report, combine
from edgekv.tools.bench.runner import run_child, script
from edgekv.tools.bench.workloads import DEFAULT_TEXT, TokenIds, Workloads, cut_ids, text_ids

Log = Callable[[str], None]
Child = Callable[..., Result]  # (workload, tag=None, **spec keys) -> the child's result
CHILD_TIMEOUT_S = 3 * 3600.0  # a hung child must not hang the run; the slowest takes minutes


@dataclass
class BenchOptions:
    bundle: Path
    int4_bundle: Path | None = None
    peers: list[str] = field(default_factory=lambda: list(PEERS))
    cache_dir: Path = Path("~/.cache/edgekv/bench").expanduser()
    workloads: Workloads = field(default_factory=Workloads)
    text: Path = DEFAULT_TEXT
    peer_model: str = "smollm2-135m"
    long: bool = True  # run the long stream (edgekv's budgets, and each peer once)


def run_bench(opts: BenchOptions, log: Log = print) -> Result:
    w = opts.workloads
    ids = cut_ids(text_ids(opts.bundle, opts.text), w)
    logs = opts.cache_dir / "logs"
    log(f"bench: measuring memory bandwidth with {w.threads} threads")
    bound = measure_bound(opts.bundle, opts.int4_bundle, w.threads, w.membw_mib)
    setup = Setup(opts.cache_dir, opts.peer_model, log)
    runners: dict[str, Child | Result] = {
        "edgekv": edgekv_child(opts.bundle, ids, w, logs, "edgekv"),
        "edgekv_int4": (edgekv_child(opts.int4_bundle, ids, w, logs, "edgekv_int4")
                        if opts.int4_bundle else {"error": "no --int4-bundle given"}),
        **{name: peer_child(name, ids, w, setup, log) for name in opts.peers}}
    children = {name: c for name, c in runners.items() if callable(c)}
    speeds: dict[str, list[Result]] = {name: [] for name in children}
    for r in range(w.rounds):  # rounds interleave the runners: a slow minute hits them all
        for name, child in children.items():
            log(f"bench: {name}" + (f" (round {r + 1} of {w.rounds})" if w.rounds > 1 else ""))
            speeds[name].append(child("speed"))
    results = {name: c if isinstance(c, dict) else median_speed(speeds[name])
               for name, c in runners.items()}
    for name, child in children.items():
        peer = PEERS.get(name)
        if peer is None or peer.quality:
            results[name] = with_quality(results[name], w, lambda c=child: c("quality"))
        long_runs = (long_children(name, child, opts.bundle, w) if opts.long
                     and name != "edgekv_int4" and "error" not in results[name] else None)
        results[name] = combine(results[name], long_runs)
    same = same_process_runs(opts, ids, w, setup, results, logs, log)
    edgekv, edgekv_int4 = results.pop("edgekv"), results.pop("edgekv_int4")
    return build_report(edgekv, results, edgekv_int4, bound, same)


# (edgekv runner, its bundle option, the onnxruntime-genai peer of the same precision)
SAME_PROCESS_PAIRS = (("edgekv", "bundle", "ort_genai_fp32"),
                      ("edgekv_int4", "int4_bundle", "ort_genai_int4"))


def same_process_runs(opts: BenchOptions, ids: TokenIds, w: Workloads, setup: Setup,
                      results: dict[str, Result], logs: Path, log: Log) -> dict[str, Result]:
    """edgekv's decode step and onnxruntime-genai's graph alternated in one child
    (same_process.py), for each precision where both ran: free of the drift between
    processes that the speed ratios carry."""
    out: dict[str, Result] = {}
    if not w.same_process_rounds:
        return out
    for ours, bundle_option, peer in SAME_PROCESS_PAIRS:
        bundle = getattr(opts, bundle_option)
        if peer not in results or bundle is None or any(
                "error" in results[name] for name in (ours, peer)):
            continue
        log(f"bench: {ours} and {peer}'s graph in one process")
        try:
            _, model = prepare(PEERS[peer], setup)  # made by the speed run: only looked up
        except SetupError as exc:
            out[peer] = {"error": str(exc)}
            continue
        spec = {"bundle": str(bundle), "model": model, "prompt_ids": ids.prompt,
                "steps": w.same_process_steps, "rounds": w.same_process_rounds,
                "threads": w.threads}
        # twice, each runner opened first once: the open order moved a step by a few %
        runs = [run_child(sys.executable, script("same_process"), {**spec, "peer_first": first},
                          logs / f"same_process-{peer}-{order}.log", CHILD_TIMEOUT_S,
                          "same process") for order, first in (("ours", False), ("peer", True))]
        out[peer] = both_orders(runs)
    return out


def both_orders(runs: list[Result]) -> Result:
    """One same-process result from the two open orders: the mean of each time, the ratios
    of those means, the fewer same tokens; each order's own result under `orders`."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    times = ("edgekv_step_ms", "edgekv_graph_ms", "peer_step_ms", "peer_graph_ms")
    out: Result = {key: statistics.mean(r[key] for r in runs) for key in times}
    out.update(decode_ratio=out["peer_step_ms"] / out["edgekv_step_ms"],
               graph_ratio=out["peer_graph_ms"] / out["edgekv_graph_ms"],
               same_tokens=min(r["same_tokens"] for r in runs),
               peer_rounds_agree=all(r["peer_rounds_agree"] for r in runs),
               **{k: runs[0][k] for k in ("steps", "rounds", "context", "budget")},
               orders=[{k: r[k] for k in (*times, "opened_first")} for r in runs])
    return out


def child_spec(ids: TokenIds, w: Workloads, workload: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"workload": workload, "threads": w.threads, **extra}
    if workload == "speed":
        spec.update(prompt_ids=ids.prompt, decode_tokens=w.decode_tokens)
    elif workload == "quality":
        spec.update(quality_ids=ids.quality)
    else:
        spec.update(long_ids=ids.long, mark_tokens=w.mark_tokens)
    return spec


def edgekv_child(bundle: Path, ids: TokenIds, w: Workloads, logs: Path, label: str) -> Child:
    """Runs one workload of edgekv on `bundle` in a child; extra keys go into its spec and
    `tag` names its log (default: the workload)."""
    def child(workload: str, tag: str | None = None, **extra: Any) -> Result:
        spec = child_spec(ids, w, workload, bundle=str(bundle), **extra)
        return run_child(sys.executable, script("peer_edgekv"), spec,
                         logs / f"{label}-{tag or workload}.log", CHILD_TIMEOUT_S, label)

    return child


def peer_child(name: str, ids: TokenIds, w: Workloads, setup: Setup, log: Log
               ) -> Child | Result:
    """The peer's child runner, set up first (venv, model files: once, then cached); the
    reason as an error result where it cannot be."""
    if name not in PEERS:
        return {"error": f"unknown peer {name!r} (known: {', '.join(PEERS)})"}
    peer = PEERS[name]
    start = time.perf_counter()
    try:
        python, model = prepare(peer, setup)
    except SetupError as exc:
        log(f"bench: {name} could not be set up: {exc}")
        return {"error": str(exc)}
    setup_s = round(time.perf_counter() - start, 1)

    def child(workload: str, tag: str | None = None, **extra: Any) -> Result:
        spec = child_spec(ids, w, workload, model=model, **peer.spec, **extra)
        result = run_child(python, script(peer.script), spec,
                           setup.log_path(f"{name}-{tag or workload}"), CHILD_TIMEOUT_S, name)
        return {**result, "setup_s": setup_s} if workload == "speed" else result

    return child


def long_children(name: str, child: Child, bundle: Path, w: Workloads) -> dict[str, Result]:
    """The long stream: edgekv at each of the workloads' budgets, a peer once."""
    if name != "edgekv":
        return {"stream": child("long")}
    return {str(b): child("long", f"long-{b}", budget=b) for b in long_budgets(bundle, w)}


def median_speed(rounds: list[Result]) -> Result:
    """One speed result from a runner's rounds: the median of each speed and of the overhead,
    the largest peak RSS, the rest from the first round that ran; each round's speeds are kept
    under `rounds` when there was more than one. All rounds failing gives the first error."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[0]
    out = dict(ok[0])
    for key in (*SPEEDS, "overhead_frac", "overhead_frac_prefill"):
        values = [r[key] for r in ok if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = statistics.median(values)
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
    if len(rounds) > 1:
        out["rounds"] = [{k: r.get(k) for k in SPEEDS} if "error" not in r
                         else {"error": r["error"]} for r in rounds]
    return out


def with_quality(speed: Result, w: Workloads, run: Callable[[], Result]) -> Result:
    """The speed result with the runner's perplexity over the quality tokens (a child of its
    own, so the speed run's peak RSS stays its own); a failure is kept as `ppl_error`."""
    if not w.quality_tokens or "error" in speed:
        return speed
    quality = run()
    if "error" in quality:
        return {**speed, "ppl_error": quality["error"]}
    return {**speed, "ppl": quality["ppl"], "ppl_tokens": quality["ppl_tokens"]}


def long_budgets(bundle: Path, w: Workloads) -> list[int]:
    """The workloads' budgets, or the bundle's own when none is given; a budget above the
    bundle's is left to the session to refuse (its error then shows in the report)."""
    from edgekv.export.manifest import load_manifest

    return list(w.long_budgets) or [load_manifest(bundle, verify=False).budget]


def measure_bound(bundle: Path, int4_bundle: Path | None, threads: int,
                  mib_per_thread: int = 256) -> Result:
    """Bandwidth, and the decode bound of the fp32 bundle (and of the int4 one if given)."""
    bandwidth = membw.measure_bandwidth_gbps(threads, mib_per_thread)
    try:
        need = membw.bundle_decode_bytes(bundle)
    except Exception as exc:  # noqa: BLE001 - a bound we cannot compute is reported, not fatal
        return {"membw_gbps": bandwidth, "decode_tps": None, "error": f"{exc}"}
    bound: Result = {"membw_gbps": bandwidth,
                     "decode_tps": membw.decode_bound_tps(need.total, bandwidth),
                     "bytes_per_token": need.total, "weight_bytes": need.weights,
                     "kv_bytes": need.kv}
    if int4_bundle is not None:
        try:
            need4 = membw.bundle_decode_bytes(int4_bundle)
            bound["int4_decode_tps"] = membw.decode_bound_tps(need4.total, bandwidth)
            bound["int4_bytes_per_token"] = need4.total
        except Exception as exc:  # noqa: BLE001
            bound["int4_error"] = str(exc)
    return bound
