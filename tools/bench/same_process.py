"""edgekv's decode step against onnxruntime-genai's graph, alternated in one process.

Separate processes a few minutes apart differ by up to ±10% on a shared machine (docs/bench.md),
which is as much as the gap the speed ratios measure. Here both run in this child, in rounds of
`steps` greedy decode steps, the order swapped each round, so a slow second hits both:

- edgekv: `Session.step` on the bundle after the prompt (streaming, the bundle's budget);
- the peer: the graph onnxruntime-genai's builder made, run by this environment's ONNX Runtime
  with IOBinding over past/present buffers shared as genai shares them. genai's own runtime
  (its search, logits processing) is not counted, so the peer's figure is a lower bound.

The peer's context is rewound to the prompt at each round (2,048 to 2,048 + steps tokens); the
bundle's cache stays at its budget. Both runners' greedy tokens after the prompt are compared,
so a graph driven wrongly shows as tokens that differ (fp32).

Spec: bundle, model (the builder's output directory), prompt_ids, steps, rounds, threads,
peer_first (open the peer's graph before the bundle).
"""

from __future__ import annotations

import statistics
import time

from childio import emit, log, read_spec


def main() -> None:
    spec = read_spec()
    import numpy as np

    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.session import Session
    from edgekv.tools.bench.genai_graph import GenaiGraph

    prompt, steps, rounds = spec["prompt_ids"], spec["steps"], spec["rounds"]
    bundle = Bundle.open(spec["bundle"])
    # Which runner a process opens first moved a step by 2-4% in some runs here (docs/bench.md,
    # "One process, no drift"): the bench runs this child twice, each runner first once.
    opened = []
    for who in ("peer", "edgekv") if spec.get("peer_first") else ("edgekv", "peer"):
        if who == "edgekv":
            session = Session.open(bundle, threads=spec["threads"])
            ours_logits = session.feed(np.asarray(prompt, dtype=np.int64))
        else:
            peer = GenaiGraph(spec["model"], len(prompt) + steps, spec["threads"])
            for start in range(0, len(prompt), 256):  # the graph returns every row's logits
                peer_logits = peer.run(prompt[start : start + 256])
            peer_first = int(np.argmax(peer_logits))
        opened.append(who)
    log(f"same process: {spec['bundle']} against {spec['model']}, {rounds} rounds of {steps}")
    times: dict[str, list[float]] = {"edgekv_step_ms": [], "edgekv_graph_ms": [],
                                     "peer_step_ms": [], "peer_graph_ms": []}
    tokens: dict[str, list[int]] = {"edgekv": [], "peer": []}
    for r in range(rounds):
        for who in ("edgekv", "peer") if r % 2 == 0 else ("peer", "edgekv"):
            if who == "edgekv":
                graph_before, start = session.stats.graph_s, time.perf_counter()
                for _ in range(steps):
                    token = int(np.argmax(ours_logits))
                    tokens["edgekv"].append(token)
                    ours_logits = session.step(bundle.embed(np.array([token])))[-1]
                times["edgekv_step_ms"].append((time.perf_counter() - start) / steps * 1e3)
                times["edgekv_graph_ms"].append((session.stats.graph_s - graph_before)
                                                / steps * 1e3)
            else:
                peer.length, token, graph_s = len(prompt), peer_first, 0.0
                start = time.perf_counter()
                for _ in range(steps):
                    tokens["peer"].append(token)
                    graph_start = time.perf_counter()
                    logits = peer.run([token])
                    graph_s += time.perf_counter() - graph_start
                    token = int(np.argmax(logits))
                times["peer_step_ms"].append((time.perf_counter() - start) / steps * 1e3)
                times["peer_graph_ms"].append(graph_s / steps * 1e3)
    result = {key: statistics.median(values) for key, values in times.items()}
    first = zip(tokens["edgekv"][:steps], tokens["peer"][:steps], strict=True)
    result.update(
        decode_ratio=result["peer_step_ms"] / result["edgekv_step_ms"],
        graph_ratio=result["peer_graph_ms"] / result["edgekv_graph_ms"],
        same_tokens=next((i for i, (a, b) in enumerate(first) if a != b), steps),
        steps=steps, rounds=rounds, context=len(prompt), budget=session.cache.budget,
        opened_first=opened[0])
    emit(result)


if __name__ == "__main__":
    main()
