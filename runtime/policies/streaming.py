"""`streaming`: StreamingLLM. The first `sinks` tokens stay forever, then the most recent ones.

Before a chunk of c tokens is written, the oldest non-sink tokens are evicted until
occupied + c <= budget. With position mode `cache` (the default), kept keys are re-rotated to
their ranks 0..n-1 and the chunk takes n..n+c-1, so positions never exceed budget + chunk.
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgekv.runtime.cache import KVCache
from edgekv.runtime.policies.base import Policy, evict_lowest


@dataclass
class Streaming(Policy):
    name: ClassVar[str] = "streaming"
    summary: ClassVar[str] = "attention sinks + most recent tokens (StreamingLLM)"
    sinks: int = 4

    def min_budget(self, chunk: int) -> int:
        return self.sinks + chunk

    def make_room(self, cache: KVCache, n: int) -> None:
        need = np.maximum(n - cache.free_count(), 0)
        if not cache.protected.any() and np.all(need <= cache.n_valid - self.sinks):
            # Nothing protected: the oldest non-sinks are the ranks right after the sinks. One
            # pass, where the general path below cost a float copy and a partial sort.
            rank = cache.rank
            cache.evict(cache.valid & (rank >= self.sinks) & (rank < self.sinks + need[..., None]))
            return
        # The sinks are the tokens at the `sinks` smallest stream positions ever seen; the
        # cache never evicts them, so they are the smallest valid positions still present.
        priority = cache.orig_pos.astype(np.float64)
        priority[(cache.rank < self.sinks) & cache.valid] = np.inf
        evict_lowest(cache, priority, n - cache.free_count())
