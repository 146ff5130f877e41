"""What every peer's child process shares: read the spec, time, measure RSS, print one JSON line.

Peer scripts run in their own venvs, where edgekv is not installed, so this file imports only
the standard library; the scripts import it from their own folder (sys.path[0]).

The spec (a JSON file whose path is argv[1]):
  workload       "speed" (prefill the prompt, then decode), "long" (stream the long text) or
                 "quality" (perplexity of quality_ids, the whole context kept)
  prompt_ids     the prompt of the speed workload
  decode_tokens  greedy tokens to produce after the prompt (EOS does not stop them)
  long_ids       the long text, fed `chunk` tokens at a time
  quality_ids    the tokens scored by the quality workload (each predicted from all before it)
  mark_tokens    tokens after which the first RSS mark is taken (4k by default)
  threads        intra-op threads
  model          what the peer loads (a file or directory), plus peer-specific keys
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 2**20


def read_spec() -> dict[str, Any]:
    with open(sys.argv[1], encoding="utf-8") as f:
        return json.load(f)


def rss_mb() -> float:
    """Resident set size now (from /proc, no psutil needed)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / MIB


def peak_rss_mb() -> float:
    """The process's peak RSS so far: VmHWM, the high-water mark of this process image.

    Not getrusage's ru_maxrss: Linux carries that over fork and exec, so a child started by a
    parent holding 1 GiB reports at least 1 GiB whatever it did itself.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def emit(result: dict[str, Any]) -> None:
    """The child's answer: one JSON line, the last line of stdout."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


FIRST_TOKENS = 8  # greedy tokens kept in the result: runners of the same weights should agree


def speed_result(prompt_tokens: int, prefill_s: float, decoded: int, decode_s: float,
                 tokens: list[int], **extra: Any) -> dict[str, Any]:
    """`decoded` tokens took `decode_s` after a prefill of `prompt_tokens` in `prefill_s`."""
    return {"prefill_tps": prompt_tokens / prefill_s, "decode_tps": decoded / decode_s,
            "peak_rss_mb": peak_rss_mb(), "prompt_tokens": prompt_tokens,
            "decoded_tokens": decoded, "first_tokens": [int(t) for t in tokens[:FIRST_TOKENS]],
            **extra}


class Perplexity:
    """Adds up the negative log-likelihood of each next token from rows of logits."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.nll = 0.0
        self.scored = 0

    def add(self, logits: Any, start: int) -> None:
        """logits [n, V] are the predictions after tokens start .. start + n - 1."""
        import numpy as np

        rows = np.asarray(logits, dtype=np.float64)
        rows = rows.reshape(-1, rows.shape[-1])
        targets = np.asarray(self.ids[start + 1 : start + 1 + len(rows)])
        rows = rows[: len(targets)]  # the last token predicts nothing we have
        top = rows.max(axis=-1)
        lse = np.log(np.exp(rows - top[:, None]).sum(axis=-1)) + top
        self.nll += float((lse - rows[np.arange(len(targets)), targets]).sum())
        self.scored += len(targets)

    def result(self) -> dict[str, Any]:
        import math

        return {"ppl": math.exp(self.nll / self.scored), "ppl_tokens": self.scored,
                "peak_rss_mb": peak_rss_mb()}


def chunks(ids: list[int], size: int) -> Iterator[tuple[int, list[int]]]:
    for start in range(0, len(ids), size):
        yield start, ids[start : start + size]


def stream_long(spec: dict[str, Any], feed: Callable[[list[int]], None],
                chunk: int = 512) -> dict[str, Any]:
    """Feed the long text chunk by chunk and record RSS at the mark and at the end.

    A runner that stops (a full context, a length limit) raises; the result then says how far
    it got and why, and still carries the RSS it had reached.
    """
    ids, mark = spec["long_ids"], spec["mark_tokens"]
    marks: dict[int, float] = {}
    done = 0
    start = time.perf_counter()
    try:
        for offset, part in chunks(ids, chunk):
            feed(part)
            done = offset + len(part)
            if done >= mark and not marks:
                marks[done] = rss_mb()
            if done % mark < len(part):  # a line per mark: a long stream is not silent
                log(f"{done} tokens, RSS {rss_mb():.0f} MiB, {time.perf_counter() - start:.0f} s")
    except Exception as exc:  # noqa: BLE001 - whatever stops the peer is the finding
        return {"error": f"stopped after {done} tokens: {type(exc).__name__}: {exc}"[:400],
                "tokens_done": done, "rss_mb_at": marks, "peak_rss_mb": peak_rss_mb()}
    marks[done] = rss_mb()
    first, last = marks[min(marks)], marks[max(marks)]
    return {"tokens_done": done, "rss_mb_at": marks, "rss_growth": (last - first) / first,
            "tokens_per_s": done / (time.perf_counter() - start), "peak_rss_mb": peak_rss_mb()}


class TokenClock:
    """A `generate` streamer that notes when each new token arrives.

    transformers hands the streamer the prompt first, then one call per new token: the first
    new token ends prefill, the others time decode.
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self.tokens: list[int] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if self._prompt_seen:
            self.times.append(time.perf_counter())
            self.tokens.extend(int(t) for t in value.reshape(-1).tolist())
        self._prompt_seen = True

    def end(self) -> None:
        pass
