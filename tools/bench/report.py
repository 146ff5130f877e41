"""The benchmark's answer: one JSON object and the console table made from it.

Shape (issue 8): {"edgekv", "peers": {name: ...}, "edgekv_int4", "bound"}; every runner's object
has prefill_tps, decode_tps, peak_rss_mb (or "error": why), edgekv's also rss_growth_4k_32k and
overhead_frac. Speeds are also given as ratios to every peer measured in the same run
(`ratio_to_peers`: edgekv's speed / the peer's). Where the quality workload ran, a runner has
`ppl` over `ppl_tokens`, and a quantized one `ppl_cost`: its perplexity / that of the fp32
runner of the same weights (QUALITY_REFERENCE) - 1.
"""

from __future__ import annotations

from typing import Any

PEER_ORDER = ("hf", "ort_genai_fp32", "ort_genai_int4", "llama_cpp", "optimum_ort")
SPEEDS = ("prefill_tps", "decode_tps")
# A quantized runner's quality is measured against the fp32 runner of the same weights: edgekv's
# fp32 bundle, onnxruntime-genai's fp32 model, HF on the GGUF dequantized (for llama.cpp).
QUALITY_REFERENCE = {"edgekv_int4": "edgekv", "ort_genai_int4": "ort_genai_fp32",
                     "llama_cpp": "hf"}
Result = dict[str, Any]


def combine(speed: Result, long_runs: dict[str, Result] | None = None) -> Result:
    """A runner's object: its speed result, plus its long stream(s) when they were run.

    rss_growth_4k_32k is the worst growth over the long runs that finished; a run that stopped
    (a full context, a refused length) keeps its error under `long`.
    """
    out = dict(speed)
    if not long_runs:
        return out
    out["long"] = long_runs
    growths = [r["rss_growth"] for r in long_runs.values() if "rss_growth" in r]
    out["rss_growth_4k_32k"] = max(growths) if growths else None
    return out


def ratios(runner: Result, peers: dict[str, Result]) -> dict[str, dict[str, float | None]]:
    """runner's speed / each peer's speed, for both speeds; None where either is missing."""
    out: dict[str, dict[str, float | None]] = {}
    for name, peer in peers.items():
        out[name] = {key: _ratio(runner.get(key), peer.get(key)) for key in SPEEDS}
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def build_report(edgekv: Result, peers: dict[str, Result], edgekv_int4: Result,
                 bound: Result, same_process: dict[str, Result] | None = None) -> Result:
    ordered = {n: peers[n] for n in sorted(peers, key=_peer_rank)}
    report: Result = {"edgekv": dict(edgekv), "peers": ordered, "edgekv_int4": dict(edgekv_int4),
                      "bound": dict(bound)}
    # inside the runners' objects: the top level keeps exactly the issue's four keys
    for key, peer in (("edgekv", "ort_genai_fp32"), ("edgekv_int4", "ort_genai_int4")):
        if peer in (same_process or {}):
            report[key]["same_process"] = {peer: same_process[peer]}
    for key in ("edgekv", "edgekv_int4"):
        if "error" not in report[key]:
            report[key]["ratio_to_peers"] = ratios(report[key], ordered)
    runners = {"edgekv": report["edgekv"], "edgekv_int4": report["edgekv_int4"], **ordered}
    for name, reference in QUALITY_REFERENCE.items():
        quantized, fp32 = runners.get(name, {}), runners.get(reference, {})
        if quantized.get("ppl") and fp32.get("ppl"):
            quantized["ppl_cost"] = quantized["ppl"] / fp32["ppl"] - 1.0
    if edgekv.get("decode_tps") and bound.get("decode_tps"):
        report["bound"]["edgekv_frac_of_bound"] = edgekv["decode_tps"] / bound["decode_tps"]
    return report


def _peer_rank(name: str) -> tuple[int, str]:
    return (PEER_ORDER.index(name) if name in PEER_ORDER else len(PEER_ORDER), name)


def render(report: Result) -> str:
    """The console table, the ratio table and the bound, then each error in full."""
    rows = [("edgekv", report["edgekv"]), ("edgekv_int4", report["edgekv_int4"]),
            *report["peers"].items()]
    lines = [f"{'runner':<16}{'prefill tok/s':>14}{'decode tok/s':>14}{'peak RSS MiB':>14}"
             f"{'RSS 4k->32k':>13}{'overhead':>10}{'perplexity':>20}"]
    notes: list[str] = []
    for name, r in rows:
        if _failed(r, f"{name:<16}", 28, name, lines, notes):
            continue
        lines.append(f"{name:<16}{_num(r.get('prefill_tps'), 14, '.1f')}"
                     f"{_num(r.get('decode_tps'), 14, '.1f')}"
                     f"{_num(r.get('peak_rss_mb'), 14, '.0f')}"
                     f"{_growth(r):>13}{_num(r.get('overhead_frac'), 10, '.1%')}{_ppl(r):>20}")
        if "ppl_error" in r:
            notes.append(f"{name} perplexity: {r['ppl_error']}")
        for budget, run in (r.get("long") or {}).items():
            if "error" in run:
                notes.append(f"{name} long stream{_at(budget)}: {run['error']}")
    lines += [f"{name} bundle: {_options(r['bundle'])}" for name, r in rows[:2] if "bundle" in r]
    tokens = next((r["ppl_tokens"] for _, r in rows if "ppl_tokens" in r), None)
    if tokens:
        lines.append(f"perplexity: over the text's first {tokens + 1} tokens, the whole context "
                     "kept; (+x%) against the fp32 runner of the same weights")
    lines += ["", *_ratio_lines(report), *_same_process_lines(report, notes), "",
              _bound_line(report["bound"])]
    if notes:
        lines += ["", "errors:", *(f"  {n}" for n in notes)]
    return "\n".join(lines)


def _failed(r: Result, label: str, width: int, who: str, lines: list[str],
            notes: list[str]) -> bool:
    """A table row saying a runner failed, its reason in the notes; False if it did not."""
    if "error" not in r:
        return False
    lines.append(f"{label}{'error (see below)':>{width}}")
    notes.append(f"{who}: {r['error']}")
    return True


def _options(bundle: Result) -> str:
    words = [bundle["dtype"], f"budget {bundle['budget']}", f"chunk {bundle['chunk']}",
             f"keys rotated in the {'cache' if bundle['key_rope'] == 'cached' else 'graph'}"]
    if bundle.get("quant_compute"):
        words.append(f"{bundle['quant_compute']} compute")
    if bundle.get("attention") == "gqa":
        words.append("GroupQueryAttention")
    if bundle.get("attn_mass") is False:
        words.append("no attention mass")
    return ", ".join(words)


def _at(budget: str) -> str:
    return f" at budget {budget}" if budget.isdigit() else ""


def _num(value: float | None, width: int, fmt: str) -> str:
    return f"{value:>{width}{fmt}}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


def _ppl(r: Result) -> str:
    if not isinstance(r.get("ppl"), (int, float)):
        return "-"
    cost = f" ({r['ppl_cost']:+.1%})" if isinstance(r.get("ppl_cost"), (int, float)) else ""
    return f"{r['ppl']:.3f}{cost}"


def _growth(r: Result) -> str:
    if isinstance(r.get("rss_growth_4k_32k"), (int, float)):
        return f"{r['rss_growth_4k_32k']:+.1%}"
    stopped = [run for run in (r.get("long") or {}).values() if "error" in run]
    if stopped:
        done = stopped[0].get("tokens_done", 0)
        return f"stop@{done}" if done else "refused"
    return "-"


def _ratio_lines(report: Result) -> list[str]:
    if not report["peers"]:
        return ["(no ratios: no peers were run)"]
    runners = [k for k in ("edgekv", "edgekv_int4") if "ratio_to_peers" in report[k]]
    if not runners:
        return ["(no ratios: edgekv or every peer failed)"]
    header = f"{'speed ratio':<16}" + "".join(f"{k + ' ' + s[:-4]:>22}" for k in runners
                                               for s in SPEEDS)
    lines = [header]
    for peer in report["peers"]:
        cells = [report[k]["ratio_to_peers"][peer][s] for k in runners for s in SPEEDS]
        lines.append(f"{'vs ' + peer:<16}" + "".join(
            f"{c:>21.2f}x" if c is not None else f"{'-':>22}" for c in cells))
    return lines


def _same_process_lines(report: Result, notes: list[str]) -> list[str]:
    """edgekv against onnxruntime-genai's graph alternated in one process (same_process.py);
    ratio = the peer's ms / edgekv's (above 1: edgekv is faster)."""
    runs = {peer: r for key in ("edgekv", "edgekv_int4")
            for peer, r in report[key].get("same_process", {}).items()}
    if not runs:
        return []
    lines = ["", "same process, alternated; the peer's graph run by ONNX Runtime without its own "
             "runtime (ms per decode step):",
             f"{'':<20}{'edgekv step':>12}{'peer step':>10}{'ratio':>7}{'edgekv graph':>14}"
             f"{'peer graph':>11}{'ratio':>7}{'same tokens':>13}"]
    for peer, r in runs.items():
        if _failed(r, f"{'vs ' + peer:<20}", 29, f"same process vs {peer}", lines, notes):
            continue
        lines.append(f"{'vs ' + peer:<20}{r['edgekv_step_ms']:>12.2f}{r['peer_step_ms']:>10.2f}"
                     f"{r['decode_ratio']:>6.2f}x{r['edgekv_graph_ms']:>14.2f}"
                     f"{r['peer_graph_ms']:>11.2f}{r['graph_ratio']:>6.2f}x"
                     f"{r['same_tokens']:>6} of {r['steps']}")
    return lines


def _bound_line(bound: Result) -> str:
    if "error" in bound:
        return f"bound: {bound['error']}"
    line = (f"bound: memory bandwidth {bound['membw_gbps']:.1f} GB/s, "
            f"{bound['bytes_per_token'] / 2**20:.0f} MiB read per decode token "
            f"-> decode <= {bound['decode_tps']:.1f} tok/s")
    if "edgekv_frac_of_bound" in bound:
        line += f"; edgekv decodes at {bound['edgekv_frac_of_bound']:.0%} of it"
    if "int4_decode_tps" in bound:
        line += f"; int4 bundle bound {bound['int4_decode_tps']:.1f} tok/s"
    return line
