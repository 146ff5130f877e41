"""One benchmark run: bandwidth, edgekv (fp32 and int4 bundles), then each peer, in turn.

Nothing runs concurrently: every measurement is a child process alone on the machine's
threads, so the numbers of one run are comparable with each other.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekv.tools.bench import membw
from edgekv.tools.bench.peers import PEERS, Setup, SetupError, prepare
from edgekv.tools.bench.report import Result, build_report, combine
from edgekv.tools.bench.runner import run_child, script
from edgekv.tools.bench.workloads import DEFAULT_TEXT, TokenIds, Workloads, cut_ids, text_ids

Log = Callable[[str], None]
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
    log(f"bench: edgekv on {opts.bundle}")
    edgekv = run_edgekv(opts.bundle, ids, w, logs, opts.long)
    if opts.int4_bundle is None:
        edgekv_int4: Result = {"error": "no --int4-bundle given"}
    else:
        log(f"bench: edgekv on {opts.int4_bundle}")
        edgekv_int4 = run_edgekv(opts.int4_bundle, ids, w, logs, long=False, label="edgekv_int4")
    setup = Setup(opts.cache_dir, opts.peer_model, log)
    peers = {name: run_peer(name, ids, w, setup, opts.long, log) for name in opts.peers}
    return build_report(edgekv, peers, edgekv_int4, bound)


def child_spec(ids: TokenIds, w: Workloads, workload: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"workload": workload, "threads": w.threads, **extra}
    if workload == "speed":
        spec.update(prompt_ids=ids.prompt, decode_tokens=w.decode_tokens)
    elif workload == "quality":
        spec.update(quality_ids=ids.quality)
    else:
        spec.update(long_ids=ids.long, mark_tokens=w.mark_tokens)
    return spec


def run_edgekv(bundle: Path, ids: TokenIds, w: Workloads, logs: Path, long: bool,
               label: str = "edgekv") -> Result:
    def child(workload: str, tag: str, **extra: Any) -> Result:
        spec = child_spec(ids, w, workload, bundle=str(bundle), **extra)
        return run_child(sys.executable, script("peer_edgekv"), spec, logs / f"{label}-{tag}.log",
                         CHILD_TIMEOUT_S, label)

    speed = with_quality(child("speed", "speed"), w, lambda: child("quality", "quality"))
    if not long:
        return speed
    runs = {str(b): child("long", f"long-{b}", budget=b) for b in long_budgets(bundle, w)}
    out = combine(speed, runs)
    out.setdefault("rss_growth_4k_32k", None)
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


def run_peer(name: str, ids: TokenIds, w: Workloads, setup: Setup, long: bool,
             log: Log) -> Result:
    if name not in PEERS:
        return {"error": f"unknown peer {name!r} (known: {', '.join(PEERS)})"}
    peer = PEERS[name]
    start = time.perf_counter()
    try:
        python, model = prepare(peer, setup)
    except SetupError as exc:
        log(f"bench: {name} could not be set up: {exc}")
        return {"error": str(exc)}
    setup_s = time.perf_counter() - start
    log(f"bench: {name}")

    def child(workload: str) -> Result:
        spec = child_spec(ids, w, workload, model=model, **peer.spec)
        return run_child(python, script(peer.script), spec,
                         setup.log_path(f"{name}-{workload}"), CHILD_TIMEOUT_S, name)

    speed = child("speed")
    if peer.quality:
        speed = with_quality(speed, w, lambda: child("quality"))
    out = combine(speed, {"stream": child("long")} if long else None)
    out["setup_s"] = round(setup_s, 1)
    return out


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
