"""Streaming perplexity: feed a text chunk by chunk under a policy and score every next token.

The last logit of a chunk predicts the first token of the next one, so every token after the
first is scored exactly once, whatever the chunk size.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil

from edgekv.runtime.errors import EdgeKVError
from edgekv.runtime.session import Session
from edgekv.tools.progress import Progress


@dataclass
class PplResult:
    policy: str
    budget: int
    tokens: int
    ppl: float
    tokens_per_s: float
    peak_rss_mb: float
    window: int
    window_ppl: list[float] = field(default_factory=list)
    rss_mb_at: dict[int, float] = field(default_factory=dict)  # tokens fed -> RSS
    graph_frac: float = 0.0  # share of step time spent inside the graph

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def log_probs_of(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(target) for each row of logits [n, V]."""
    z = logits.astype(np.float64)
    top = z.max(-1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(-1)) + top[:, 0]
    return z[np.arange(len(targets)), targets] - lse


def read_tokens(session: Session, path: str | Path, n: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise EdgeKVError(f"text file not found: {path}")
    ids = session.bundle.text.encode(path.read_text(encoding="utf-8", errors="replace"))
    if len(ids) < n:
        raise EdgeKVError(f"{path} has {len(ids)} tokens; --tokens {n} asks for more")
    return np.asarray(ids[:n], dtype=np.int64)


def streaming_ppl(
    session: Session, ids: np.ndarray, window: int = 4096, progress: bool = True
) -> PplResult:
    nll = np.zeros(len(ids), dtype=np.float64)  # nll[i]: -log p(ids[i]); ids[0] is unscored
    proc = psutil.Process()
    rss_at: dict[int, float] = {}
    peak = proc.memory_info().rss
    bar = Progress(len(ids), "ppl", enabled=progress and Progress(0).enabled)

    def on_chunk(offset: int, logits: np.ndarray) -> None:
        nonlocal peak
        c = len(logits)
        targets = ids[offset + 1 : offset + c + 1]
        nll[offset + 1 : offset + 1 + len(targets)] = -log_probs_of(logits[: len(targets)], targets)
        done = offset + c
        rss = proc.memory_info().rss
        peak = max(peak, rss)
        if done % window < c or done == len(ids):
            rss_at[done] = rss / 2**20
        bar.update(c, f"slots {session.cache.occupied()}/{session.cache.budget}")

    start = time.perf_counter()
    session.feed(ids, on_chunk=on_chunk)
    elapsed = time.perf_counter() - start
    bar.close()
    scored = nll[1:]
    windows = [float(np.exp(nll[max(s, 1) : s + window].mean()))
               for s in range(0, len(ids), window) if len(nll[max(s, 1) : s + window])]
    return PplResult(
        policy=session.policy.name,
        budget=session.cache.budget,
        tokens=len(ids),
        ppl=float(np.exp(scored.mean())),
        tokens_per_s=len(ids) / elapsed,
        peak_rss_mb=peak / 2**20,
        window=window,
        window_ppl=windows,
        rss_mb_at=rss_at,
        graph_frac=session.stats.graph_s / max(session.stats.step_s, 1e-9),
    )
