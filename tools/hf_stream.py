"""The baseline beside `edgekv eval ppl --hf MODEL`: HF transformers with its full, growing cache.

Runs in its own process (`python -m edgekv.tools.hf_stream ...`) so that its RSS is its own.
The text is fed in chunks with a DynamicCache, so memory grows with the text, and positions go
past the model's training length (8192 for SmolLM2) as the text gets long.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import psutil

from edgekv.tools.hf_cache import cache_kwargs
from edgekv.tools.ppl import log_probs_of, read_text, window_ppl


def full_cache_nll(model, ids: np.ndarray, chunk: int, window: int) -> tuple[np.ndarray, dict]:
    import torch
    from transformers import DynamicCache

    proc = psutil.Process()
    nll = np.zeros(len(ids))
    rss_at: dict[int, float] = {}
    as_cache = cache_kwargs(model, DynamicCache(config=model.config))  # one cache, every chunk
    prev_last = None
    with torch.inference_mode():
        for start in range(0, len(ids), chunk):
            part = torch.from_numpy(ids[start : start + chunk])[None]
            logits = model(input_ids=part, **as_cache, use_cache=True).logits[0]
            logits = logits.float().numpy()
            c = part.shape[1]
            if prev_last is not None:
                nll[start] = -log_probs_of(prev_last[None], ids[start : start + 1])[0]
            targets = ids[start + 1 : start + c]
            nll[start + 1 : start + c] = -log_probs_of(logits[: c - 1], targets)
            prev_last = logits[c - 1]
            done = start + c
            if done % window < c or done == len(ids):
                rss_at[done] = proc.memory_info().rss / 2**20
                print(f"hf: {done} tokens, RSS {rss_at[done]:.0f} MiB", file=sys.stderr, flush=True)
    return nll, rss_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--text", required=True)
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--window", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=512)
    args = parser.parse_args()

    from edgekv.export.loading import load, resolve

    model, tokenizer = load(resolve(args.model))
    text = read_text(args.text)  # the same bytes edgekv scored, refused the same way
    ids = np.asarray(tokenizer(text, add_special_tokens=False).input_ids[: args.tokens])
    start = time.perf_counter()
    nll, rss_at = full_cache_nll(model, ids, args.chunk, args.window)
    elapsed = time.perf_counter() - start
    windows = window_ppl(nll, args.window)
    print(json.dumps({
        "tokens": len(ids), "ppl": float(np.exp(nll[1:].mean())), "window": args.window,
        "window_ppl": windows, "rss_mb_at": rss_at, "tokens_per_s": len(ids) / elapsed,
        "peak_rss_mb": max(rss_at.values()),
    }))


if __name__ == "__main__":
    main()
