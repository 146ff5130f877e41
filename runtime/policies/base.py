"""What a KV policy is: a small dataclass that frees slots before each chunk is written."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from edgekv.runtime.cache import KVCache
from edgekv.runtime.errors import BudgetError


@dataclass
class Policy:
    """Base policy. Subclasses set `name` and override `make_room` (and `observe` if they score).

    `make_room(cache, n)` runs before a chunk of `n` tokens is written and must leave at least
    `n` free slots below the budget in every (layer, head), or raise BudgetError.
    `observe(cache, slot_mass)` runs after each decoder call with `attn_mass` over the slots
    ([L, Hkv, capacity]); policies that score by attention accumulate it.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def min_budget(self, chunk: int) -> int:
        """The smallest budget that holds this policy's fixed parts plus one chunk."""
        return chunk

    def check_budget(self, budget: int, chunk: int) -> None:
        need = self.min_budget(chunk)
        if budget < need:
            raise BudgetError(
                f"budget {budget} is too small for policy {self.name!r} with chunk {chunk}: "
                f"it needs at least {need} slots (its fixed parts + one chunk)"
            )

    def make_room(self, cache: KVCache, n: int) -> None:
        raise NotImplementedError(f"policy {self.name!r} does not implement make_room")

    def observe(self, cache: KVCache, slot_mass: np.ndarray) -> None:
        """Default: nothing to learn from attention."""

    def params(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def free_count(cache: KVCache) -> np.ndarray:
    """Free slots below the budget per (layer, head): [L, Hkv]."""
    return cache.budget - cache.valid[..., : cache.budget].sum(-1)


def evict_lowest(cache: KVCache, priority: np.ndarray, need: np.ndarray) -> None:
    """Evict, per (layer, head), the `need[l, h]` evictable slots of lowest `priority`.

    Empty and protected slots are never chosen. Raises BudgetError if there are too few.
    """
    if not np.any(need > 0):
        return
    evictable = cache.valid & ~cache.protected
    if np.any(evictable.sum(-1) < need):
        raise BudgetError("not enough evictable slots: protected tokens fill the budget")
    key = np.where(evictable, priority, np.inf)
    order = np.argsort(key, axis=-1, kind="stable")
    take = np.arange(cache.capacity) < need[..., None]
    mask = np.zeros_like(evictable)
    np.put_along_axis(mask, order, take, axis=-1)
    cache.evict(mask)
