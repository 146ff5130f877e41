"""Small helpers shared by tests (imported as `helpers`; tests/ is on sys.path via conftest)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

TEXT_FILE = Path(__file__).parent / "data" / "pride_and_prejudice.txt"
FAMILIES = ["llama", "qwen2", "mistral", "qwen3"]


def load_tiny(directory: Path):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype="float32").eval()
    return model, AutoTokenizer.from_pretrained(directory)


def text_ids(tokenizer, n: int, offset: int = 0) -> list[int]:
    text = TEXT_FILE.read_text(encoding="utf-8")[offset : offset + 40 * n]
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) >= n, "test text too short for the requested tokens"
    return ids[:n]


def filled_cache(budget: int, n: int, capacity: int | None = None):
    """A 2-layer, 2-head KV cache holding tokens 0..n-1 (zero K/V), for policy tests."""
    import numpy as np

    from edgekv.runtime.cache import KVCache

    cache = KVCache.allocate(2, 2, capacity or budget, 4, budget=budget)
    kv = np.zeros((2, 2, n, 4), np.float32)
    cache.write(cache.free_slots(n), kv, kv, np.arange(n))
    return cache


def kept_positions(cache) -> list[int]:
    """The stream positions layer 0, head 0 holds, in order."""
    return sorted(cache.orig_pos[0, 0][cache.valid[0, 0]].tolist())
