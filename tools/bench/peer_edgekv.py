"""The edgekv side: a bundle run by edgekv's own Session, measured like the peers.

Runs in edgekv's environment, as a child like every peer, so its peak RSS is its own.
Workloads:
  speed  `Session.feed` of the prompt (prefill), then a greedy `Session.step` loop (decode);
         overhead is the share of decode step time spent outside the graph
  long   `streaming_ppl` over the long text at spec["budget"]: RSS at the mark and at the end
  quality  `streaming_ppl` over quality_ids in one window (no eviction while they fit the
         budget)
"""

from __future__ import annotations

import time

from childio import emit, log, peak_rss_mb, read_spec, speed_result


def overhead(graph_s: float, step_s: float) -> float:
    """Share of step time spent outside the graph (policy, cache bookkeeping, Python)."""
    return 1.0 - graph_s / step_s if step_s > 0 else 0.0


def main() -> None:
    spec = read_spec()
    import numpy as np

    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.session import Session

    bundle = Bundle.open(spec["bundle"])
    session = Session.open(bundle, policy=spec.get("policy", "streaming"),
                           budget=spec.get("budget"), threads=spec["threads"])
    log(f"edgekv: {spec['bundle']} at budget {session.cache.budget}")
    if spec["workload"] == "quality":
        from edgekv.tools.ppl import streaming_ppl

        ids = np.asarray(spec["quality_ids"], dtype=np.int64)
        result = streaming_ppl(session, ids, window=len(ids), progress=False)
        emit({"ppl": result.ppl, "ppl_tokens": len(ids) - 1, "peak_rss_mb": peak_rss_mb(),
              "budget": session.cache.budget})
        return
    if spec["workload"] == "long":
        emit(long_stream(session, np.asarray(spec["long_ids"], dtype=np.int64),
                         spec["mark_tokens"]))
        return
    prompt = np.asarray(spec["prompt_ids"], dtype=np.int64)
    start = time.perf_counter()
    logits = session.feed(prompt)
    prefill_s = time.perf_counter() - start
    stats = session.stats
    prefill_graph_s, prefill_step_s = stats.graph_s, stats.step_s
    n = spec["decode_tokens"]
    tokens = []
    start = time.perf_counter()
    for _ in range(n):
        tokens.append(int(np.argmax(logits)))
        logits = session.step(bundle.embed(np.array(tokens[-1:])))[-1]
    decode_s = time.perf_counter() - start
    emit(speed_result(
        len(prompt), prefill_s, n, decode_s, tokens,
        overhead_frac=overhead(stats.graph_s - prefill_graph_s, stats.step_s - prefill_step_s),
        overhead_frac_prefill=overhead(prefill_graph_s, prefill_step_s),
        budget=session.cache.budget, policy=session.policy.name,
        bundle=bundle_options(bundle.manifest),
    ))


def bundle_options(manifest) -> dict:  # noqa: ANN001 - Manifest
    """The export options that change speed or memory, so a report says what it measured."""
    return {"dtype": manifest.dtype, "budget": manifest.budget, "chunk": manifest.chunk,
            "key_rope": manifest.key_rope, "quant_compute": manifest.quant_compute,
            "attention": manifest.attention, "attn_mass": manifest.attn_mass}


def long_stream(session, ids, mark: int) -> dict:  # noqa: ANN001 - Session, np.ndarray
    from edgekv.tools.ppl import streaming_ppl

    result = streaming_ppl(session, ids, window=mark, progress=False)
    marks = sorted(result.rss_mb_at.items())
    first, last = marks[0][1], marks[-1][1]
    return {"budget": result.budget, "tokens_done": result.tokens, "ppl": result.ppl,
            "tokens_per_s": result.tokens_per_s,
            "rss_mb_at": {str(k): v for k, v in marks}, "rss_growth": (last - first) / first,
            "overhead_frac": 1.0 - result.graph_frac, "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    main()
