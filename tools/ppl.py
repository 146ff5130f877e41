"""Streaming perplexity: feed a text chunk by chunk under a policy and score every next token.

The last logit of a chunk predicts the first token of the next one, so every token after the
first is scored exactly once, whatever the chunk size.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil

from edgekv.runtime.errors import EdgeKVError
from edgekv.runtime.session import Session
from edgekv.tools import phases
from edgekv.tools.progress import Progress

DROPPED_WARNING = 0.9  # warn when the tokens decode to less of the text than this
TOKEN_MARGIN = 64  # tokens beyond n encoded, so a word cut at the prefix's end is not scored


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
    nll: np.ndarray | None = field(default=None, repr=False)  # per token; nll[0] unscored

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("nll")
        return out

    def ppl_first(self, n: int) -> float:
        """Perplexity over the first `n` tokens only."""
        assert self.nll is not None
        return float(np.exp(self.nll[1:n].mean()))


def log_probs_of(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(target) for each row of logits [n, V]."""
    z = logits.astype(np.float64)
    top = z.max(-1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(-1)) + top[:, 0]
    return z[np.arange(len(targets)), targets] - lse


def windows(tokens: int, window: int) -> list[tuple[int, int]]:
    """(start, end) of each `window` tokens that has a scored token (token 0 is not), so a
    window of 1 has none in [0, 1): the report labels what `window_ppl` measured."""
    return [(s, min(s + window, tokens)) for s in range(0, tokens, window)
            if max(s, 1) < min(s + window, tokens)]


def window_ppl(nll: np.ndarray, window: int) -> list[float]:
    """Perplexity of each `window` tokens of `nll` (per-token; nll[0] is unscored)."""
    return [float(np.exp(nll[max(lo, 1) : hi].mean())) for lo, hi in windows(len(nll), window)]


def read_text(path: str | Path) -> str:
    """The file as UTF-8 text. Anything else is refused by name: bytes decoded as something
    they are not (Latin-1, UTF-16, a PNG) would give a perplexity of nothing in particular."""
    path = Path(path)
    if path.is_dir():
        raise EdgeKVError(f"{path} is a directory; --text takes a text file")
    if not path.is_file():
        raise EdgeKVError(f"text file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EdgeKVError(f"cannot read {path}: {exc.strerror}") from None
    try:
        # A UTF-8 BOM stays, as in the --hf baseline's reading, so both score the same ids
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EdgeKVError(f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                          f"{exc.start}): a binary file, or text in another encoding to convert "
                          "first (e.g. iconv -f latin1 -t utf-8)") from None
    if "\x00" in text:  # valid UTF-8, but no text holds NUL bytes: a binary file
        raise EdgeKVError(f"{path} holds NUL bytes: a binary file, not text")
    return text


def text_tokens(session: Session, text: str, n: int, name: str | Path = "the text") -> np.ndarray:
    """The first `n` token ids of `text`; `name` says whose in the error when it has fewer."""
    # Encode a growing prefix, not the whole file: tokenizing a whole novel to score 2048
    # tokens was a transient ~90 MiB peak that `edgekv profile` showed before prefill. The
    # margin keeps the tokens cut at the prefix's end out of the n returned.
    size = 8 * (n + TOKEN_MARGIN)
    while True:
        ids = session.bundle.text.encode(text[:size])
        if len(ids) >= n + TOKEN_MARGIN or size >= len(text):
            break
        size *= 2
    if len(ids) < n:
        raise EdgeKVError(f"{name} has {len(ids)} tokens; --tokens {n} asks for more")
    _warn_if_dropped(text[:size], session.bundle.text.decode(ids), name)
    return np.asarray(ids[:n], dtype=np.int64)


def _warn_if_dropped(text: str, decoded: str, name: str | Path) -> None:
    """A tokenizer without byte fallback silently drops what its vocabulary lacks (another
    script, emoji): the perplexity would then be of what is left, so say how much that is."""
    had, kept = (len("".join(t.split())) for t in (text, decoded))
    if kept < DROPPED_WARNING * had:
        warnings.warn(f"the tokenizer kept {kept} of the {had} characters of {name} it read (no "
                      "byte fallback drops what its vocabulary lacks): the perplexity covers only "
                      "what it kept", stacklevel=2)


def read_tokens(session: Session, path: str | Path, n: int) -> np.ndarray:
    """The first `n` token ids of the text file at `path`."""
    return text_tokens(session, read_text(path), n, path)


def streaming_ppl(
    session: Session, ids: np.ndarray, window: int = 4096, progress: bool = True
) -> PplResult:
    nll = np.zeros(len(ids), dtype=np.float64)  # nll[i]: -log p(ids[i]); ids[0] is unscored
    proc = psutil.Process()
    rss_at: dict[int, float] = {}
    peak = proc.memory_info().rss
    bar = Progress(len(ids), "ppl", enabled=progress and Progress(0).enabled)
    first_eviction: int | None = None  # tokens fed when the policy first evicted
    steady = False

    def on_chunk(offset: int, logits: np.ndarray) -> None:
        nonlocal peak, first_eviction, steady
        c = len(logits)
        targets = ids[offset + 1 : offset + c + 1]
        nll[offset + 1 : offset + 1 + len(targets)] = -log_probs_of(logits[: len(targets)], targets)
        done = offset + c
        rss = proc.memory_info().rss
        peak = max(peak, rss)
        if done % window < c or done == len(ids):
            rss_at[done] = rss / 2**20
        bar.update(c, f"slots {session.cache.occupied()}/{session.cache.budget}")
        # Phase markers for `edgekv profile`. Steady state: a whole budget of tokens after the
        # first eviction, when every slot has been rewritten once.
        if first_eviction is None and session.cache.evictions:
            first_eviction = done
            phases.mark("first-eviction")
        elif (first_eviction is not None and not steady
              and done >= first_eviction + session.cache.budget):
            steady = True
            phases.mark("steady")

    phases.mark("prefill")
    start = time.perf_counter()
    session.feed(ids, on_chunk=on_chunk)
    elapsed = time.perf_counter() - start
    bar.close()
    scored = nll[1:]
    per_window = window_ppl(nll, window)
    return PplResult(
        policy=session.policy.name,
        budget=session.cache.budget,
        tokens=len(ids),
        ppl=float(np.exp(scored.mean())),
        tokens_per_s=len(ids) / elapsed,
        peak_rss_mb=peak / 2**20,
        window=window,
        window_ppl=per_window,
        rss_mb_at=rss_at,
        graph_frac=session.stats.graph_s / max(session.stats.step_s, 1e-9),
        nll=nll,
    )


def run_hf_baseline(model: str, text: str | Path, tokens: int, window: int) -> dict:
    """HF full-cache perplexity of the same text, measured in a child process."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "edgekv.tools.hf_stream", model, "--text", str(text),
           "--tokens", str(tokens), "--window", str(window)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise EdgeKVError(f"the HF baseline failed (exit {proc.returncode}); see its stderr above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(result: PplResult, hf: dict | None = None) -> str:
    """The console table: per-window perplexity (beside HF's), flatness and RSS."""
    lines = [f"policy {result.policy}  budget {result.budget}  tokens {result.tokens}"]
    header = f"  {'tokens':>13}  {'edgekv ppl':>10}"
    lines.append(header + (f"  {'HF full-cache ppl':>17}" if hf else ""))
    bounds = windows(result.tokens, result.window)
    for i, (ppl, (lo, hi)) in enumerate(zip(result.window_ppl, bounds, strict=True)):
        row = f"  {lo:>6}-{hi:<6}  {ppl:>10.3f}"
        if hf and i < len(hf["window_ppl"]):
            row += f"  {hf['window_ppl'][i]:>17.3f}"
        lines.append(row)
    median = float(np.median(result.window_ppl))
    worst = max(result.window_ppl)
    lines.append(f"ppl {result.ppl:.3f}  {result.tokens_per_s:.0f} tokens/s  "
                 f"peak RSS {result.peak_rss_mb:.0f} MiB  graph {result.graph_frac:.0%} of step")
    lines.append(f"worst window / median window: {worst / median:.3f}")
    marks = sorted(result.rss_mb_at.items())
    if len(marks) >= 2:
        (first_n, first), (last_n, last) = marks[0], marks[-1]
        lines.append(f"RSS at {first_n} tokens {first:.0f} MiB, at {last_n} tokens {last:.0f} MiB "
                     f"({(last - first) / first:+.1%})")
    if hf:
        hf_marks = sorted((int(k), v) for k, v in hf["rss_mb_at"].items())
        lines.append(f"HF full cache: ppl {hf['ppl']:.3f}, {hf['tokens_per_s']:.0f} tokens/s, RSS "
                     + ", ".join(f"{v:.0f} MiB at {k}" for k, v in hf_marks))
    return "\n".join(lines)
