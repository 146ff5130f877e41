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

import numpy as np
from childio import emit, log, read_spec


def main() -> None:
    spec = read_spec()
    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.session import Session
    from edgekv.tools.bench.genai_graph import GenaiGraph

    prompt, steps, rounds = spec["prompt_ids"], spec["steps"], spec["rounds"]
    bundle = Bundle.open(spec["bundle"])
    # Which runner a process opens first moved a step by 2-4% in some runs here (docs/bench.md,
    # "One process, no drift"): the bench runs this child twice, each runner first once.
    order = ("peer", "edgekv") if spec.get("peer_first") else ("edgekv", "peer")
    for who in order:
        if who == "edgekv":
            session = Session.open(bundle, threads=spec["threads"])
            ours = Runner(session.feed(np.asarray(prompt, dtype=np.int64)))
        else:
            graph = GenaiGraph(spec["model"], len(prompt) + steps, spec["threads"])
            for start in range(0, len(prompt), 256):  # the graph returns every row's logits
                logits = graph.run(prompt[start : start + 256])
            peer = Runner(logits)

    def ours_step(token: int) -> tuple[object, float]:
        before = session.stats.graph_s
        logits = session.step(bundle.embed(np.array([token])))[-1]
        return logits, session.stats.graph_s - before

    def peer_step(token: int) -> tuple[object, float]:
        start = time.perf_counter()
        logits = graph.run([token])
        return logits, time.perf_counter() - start

    log(f"same process: {spec['bundle']} against {spec['model']}, {rounds} rounds of {steps}")
    for r in range(rounds):
        for runner in (ours, peer) if r % 2 == 0 else (peer, ours):
            if runner is peer:
                graph.length = len(prompt)  # rewound: the same context every round
                runner.round(peer_step, steps, restart=True)
            else:
                runner.round(ours_step, steps)
    result = {**ours.medians("edgekv"), **peer.medians("peer")}
    first = zip(ours.tokens[:steps], peer.tokens[:steps], strict=True)
    result.update(
        decode_ratio=result["peer_step_ms"] / result["edgekv_step_ms"],
        graph_ratio=result["peer_graph_ms"] / result["edgekv_graph_ms"],
        same_tokens=next((i for i, (a, b) in enumerate(first) if a != b), steps),
        # the peer is rewound every round: each of its rounds must repeat its first
        peer_rounds_agree=len(set(map(tuple, np.reshape(peer.tokens, (rounds, steps))))) == 1,
        steps=steps, rounds=rounds, context=len(prompt), budget=session.cache.budget,
        opened_first=order[0])
    emit(result)


class Runner:
    """One side's greedy decode from the logits after the prompt, timed a round at a time."""

    def __init__(self, logits: np.ndarray) -> None:
        # a copy: the peer's driver writes each call's logits into the buffer this may view
        self.after_prompt = self.logits = logits.copy()
        self.tokens: list[int] = []
        self.step_ms: list[float] = []
        self.graph_ms: list[float] = []

    def round(self, step, steps: int, restart: bool = False) -> None:  # noqa: ANN001
        """`steps` greedy steps; `step(token)` -> (logits, seconds in the graph). `restart`:
        from the prompt again (the peer is rewound), else on from the last step."""
        logits = self.after_prompt if restart else self.logits
        graph_s, start = 0.0, time.perf_counter()
        for _ in range(steps):
            token = int(np.argmax(logits))
            self.tokens.append(token)
            logits, in_graph = step(token)
            graph_s += in_graph
        self.step_ms.append((time.perf_counter() - start) / steps * 1e3)
        self.graph_ms.append(graph_s / steps * 1e3)
        self.logits = logits

    def medians(self, name: str) -> dict[str, float]:
        return {f"{name}_step_ms": statistics.median(self.step_ms),
                f"{name}_graph_ms": statistics.median(self.graph_ms)}


if __name__ == "__main__":
    main()
