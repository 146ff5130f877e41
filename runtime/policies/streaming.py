"""`streaming`: StreamingLLM. The first `sinks` tokens stay forever, then the most recent ones.

Before a chunk of c tokens is written, the oldest non-sink tokens are evicted until
occupied + c <= budget. With position mode `cache` (the default), kept keys are re-rotated to
their ranks 0..n-1 and the chunk takes n..n+c-1, so positions never exceed budget + chunk.
"""

from dataclasses import dataclass
from typing import ClassVar

from edgekv.runtime.cache import KVCache
from edgekv.runtime.policies.base import Policy, evict_oldest


@dataclass
class Streaming(Policy):
    name: ClassVar[str] = "streaming"
    summary: ClassVar[str] = "attention sinks + most recent tokens (StreamingLLM)"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"sinks": (0, float("inf"))}
    oldest_first: ClassVar[bool] = True
    reads_mass: ClassVar[bool] = False
    same_slots: ClassVar[bool] = True
    sinks: int = 4

    def min_budget(self, chunk: int) -> int:
        return self.sinks + chunk

    def make_room(self, cache: KVCache, n: int) -> None:
        evict_oldest(cache, n, self.sinks)
