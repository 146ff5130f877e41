"""What a KV policy is: a small dataclass that decides, between decoder calls, what stays.

The session calls, for every chunk of c tokens:
  1. `make_room(cache, c)`: free at least c slots below the budget in every (layer, head),
     or raise BudgetError. The chunk attends to what is left.
  2. `mass_weight(c)`: how much each chunk query counts in the graph's `attn_mass`.
  3. `observe(cache, slot_mass)`: the attention the chunk paid each cached slot
     ([L, Hkv, capacity]); policies that score by attention accumulate it here.
  4. `admit(cache, chunk)`: write the chunk's K/V (the default: every token in a free slot;
     a compressing policy may merge or drop tokens instead).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from edgekv.runtime.cache import TEXT, KVCache
from edgekv.runtime.errors import BudgetError


@dataclass
class Chunk:
    """A chunk the decoder has just processed, as the session hands it to the policy."""

    new_keys: np.ndarray  # [L, Hkv, c, D], pre-RoPE
    new_values: np.ndarray  # [L, Hkv, c, D]
    positions: np.ndarray  # [c] stream positions
    chunk_mass: np.ndarray  # [L, Hkv, c] attention the chunk's queries paid its own tokens
    modality: int = TEXT
    group: int = 0  # frame / turn id
    protected: bool = False
    place: np.ndarray | None = None  # [c] grid place of each token in its frame (images)
    # The chunk's keys as the graph rotated them, and where to ([L, Hkv, c, D], [L, c]);
    # None if it did not (StepOutput.rotated_keys).
    rotated_keys: np.ndarray | None = None
    rotated_pos: np.ndarray | None = None
    stored_values: np.ndarray | None = None  # StepOutput.stored_values

    def __len__(self) -> int:
        return len(self.positions)


@dataclass
class Policy:
    """Base policy: keep everything that fits. Subclasses set `name`, `summary`, `make_room`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # (lowest, highest) each numeric parameter may take; make_policy refuses others
    ranges: ClassVar[dict[str, tuple[float, float]]] = {}
    # Parameters that must be odd: a window centred on each token has as many neighbours on
    # either side (an even width would pool as wide as the next odd one, without a word).
    odd: ClassVar[tuple[str, ...]] = ()
    # Evicts only the oldest tokens after the sinks, so ranks move together (keys cached
    # rotated then turn only the sinks; runtime/key_rotation.py).
    oldest_first: ClassVar[bool] = False
    # Reads attn_mass (scores slots by attention): a bundle exported without it is refused.
    reads_mass: ClassVar[bool] = True
    # Keeps the same slots, with the same bias, in every head of every layer (no per-head
    # choice, no merges). gqa bundles without the attention mass take one slot bias for all
    # heads (export/decoder_step.py) and refuse other policies.
    same_slots: ClassVar[bool] = False

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
        if cache.free_count().min() < n:
            raise BudgetError(f"policy {self.name!r} cannot make room for {n} tokens")

    def mass_weight(self, c: int) -> np.ndarray:
        return np.ones(c, dtype=np.float32)

    def observe(self, cache: KVCache, slot_mass: np.ndarray) -> None:
        """Default: nothing to learn from attention."""

    def admit(self, cache: KVCache, chunk: Chunk) -> None:
        cache.write(cache.free_slots(len(chunk)), chunk.new_keys, chunk.new_values,
                    chunk.positions, score=chunk.chunk_mass, modality=chunk.modality,
                    group=chunk.group, protected=chunk.protected, place=chunk.place,
                    rotated=(chunk.rotated_keys, chunk.rotated_pos),
                    stored_values=chunk.stored_values)

    def params(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


def evict_oldest(cache: KVCache, n: int, sinks: int = 0) -> None:
    """Make room for `n` tokens by evicting, per (layer, head), the oldest tokens but the first
    `sinks` (StreamingLLM's attention sinks; `window` has none)."""
    need = np.maximum(n - cache.free_count(), 0)
    fits = bool(np.all(need <= cache.n_valid - sinks))
    if fits and need.max() <= 1:  # decode: the token at rank `sinks` in each head that needs
        # room. Unprotected, it is the oldest evictable one (what the general path below
        # picks): checked at those slots, not by a pass over every slot's flag.
        if cache.evict_rank(sinks, need >= 1):
            return
    elif fits and not cache.protected.any():
        # Nothing protected: the oldest non-sinks are the ranks right after the sinks. One
        # pass, where the general path below cost a float copy and a partial sort. (Empty
        # slots have rank 0 too; `evict` skips them.)
        rank = cache.rank
        cache.evict((rank >= sinks) & (rank < sinks + need[..., None]))
        return
    # The sinks are the tokens at the `sinks` smallest stream positions ever seen; the cache
    # never evicts them, so they are the smallest valid positions still present.
    priority = cache.orig_pos.astype(np.float64)
    priority[(cache.rank < sinks) & cache.valid] = np.inf
    evict_lowest(cache, priority, n - cache.free_count())


def evict_lowest(cache: KVCache, priority: np.ndarray, need: np.ndarray) -> None:
    """Evict, per (layer, head), the `need[l, h]` evictable slots of lowest `priority`.

    Empty and protected slots are never chosen. Raises BudgetError if there are too few.
    Uses a partial sort: the cost is linear in the capacity, whatever the budget.
    """
    need = np.broadcast_to(np.maximum(need, 0), priority.shape[:2])
    most = int(need.max())
    if most == 0:
        return
    evictable = cache.valid & ~cache.protected
    if np.any(evictable.sum(-1) < need):
        raise BudgetError("not enough evictable slots: protected tokens fill the budget")
    # A policy marks what it wants to keep with +inf; that must still rank below protected and
    # empty slots, or a policy that keeps more than it can would pick a protected slot.
    priority = np.asarray(priority, dtype=np.float64 if priority.dtype.kind != "f" else None)
    key = np.where(evictable, np.minimum(priority, np.finfo(priority.dtype).max), np.inf)
    if most == 1:  # decode: one per head at most, no partial sort needed
        take = need[..., None] >= 1
        mask = np.zeros(key.shape, dtype=bool)
        np.put_along_axis(mask, np.argmin(key, axis=-1)[..., None], take, axis=-1)
        cache.evict(mask)
        return
    lowest = np.argpartition(key, most - 1, axis=-1)[..., :most]
    # Order the `most` candidates so heads that need fewer take their lowest ones.
    order = np.argsort(np.take_along_axis(key, lowest, -1), axis=-1, kind="stable")
    lowest = np.take_along_axis(lowest, order, -1)
    take = np.arange(most) < need[..., None]
    mask = np.zeros(key.shape, dtype=bool)
    np.put_along_axis(mask, lowest, take, axis=-1)
    cache.evict(mask)
