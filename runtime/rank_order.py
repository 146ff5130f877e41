"""The rank order of a cache's slots: where each token stands in its head's stream order.

A streaming eviction (the oldest token after the sinks, in every head) drops every later rank
by one. Rewriting the ranks of all slots for it cost ~130 us of a decode step at budget 2048
(int4, ~1.1 ms outside the graph, caches cold from the graph); such drops are counted instead
(`lag`), and applied when something reads the whole order (`settled`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RankOrder:
    # [L, Hkv, capacity]: each slot's rank, plus `lag` where the rank is at or past `pivot`
    # (the ranks the counted drops moved); 0 for an empty slot. int16 where the capacity fits
    # (int32 past that): a settle rewrites it whole, and the narrower the faster.
    stored: np.ndarray
    lag: int = 0  # drops at `pivot` counted, not applied
    pivot: int = 0  # the rank every counted drop happened at (streaming's sinks)

    @staticmethod
    def dtype_for(capacity: int) -> type:
        return np.int16 if capacity <= np.iinfo(np.int16).max else np.int32

    def settled(self) -> np.ndarray:
        """The ranks [L, Hkv, capacity], every counted drop applied (one pass, if any)."""
        if self.lag:
            r = self.stored
            np.subtract(r, (r > self.pivot) * r.dtype.type(self.lag), out=r)
            self.lag = 0
        return self.stored

    def at(self, index: tuple[np.ndarray, ...]) -> np.ndarray:
        """The ranks of the slots at `index` (valid ones), without settling."""
        return self._unlagged(self.stored[index])

    def _unlagged(self, r: np.ndarray) -> np.ndarray:
        return r - self.lag * (r > self.pivot) if self.lag else r

    def stored_value(self, rank: int) -> int:
        """What `stored` holds for a valid slot at `rank`."""
        return rank + self.lag if self.lag and rank >= self.pivot else rank

    def put(self, index: tuple[np.ndarray, ...], rank: np.ndarray) -> None:
        """Give the slots at `index` these ranks (new tokens)."""
        if self.lag and int(rank.min()) < self.pivot:
            self.settled()
        self.stored[index] = rank + self.lag if self.lag else rank

    def drop(self, gone: np.ndarray | int) -> None:
        """Each head [L, Hkv] lost its token at rank gone[l, h] (a value past the capacity: no
        token; an int: the same in every head): the ranks after it move down by one. The
        slot itself is cleared apart."""
        first = gone if isinstance(gone, int) else int(gone.flat[0])
        largest = (1 << (8 * self.stored.itemsize - 1)) - 1  # iinfo(dtype).max, 10x faster
        headroom = largest - self.stored.shape[-1] - self.lag
        if (self.lag == 0 or first == self.pivot) and headroom > 0 and (
                isinstance(gone, int) or (gone == first).all()) and first < self.stored.shape[-1]:
            self.pivot = first
            self.lag += 1
            return
        r = self.settled()
        # subtracting the comparison: `where=` took twice as long (244 vs 117 us here)
        np.subtract(r, r > np.asarray(gone)[..., None], out=r)
