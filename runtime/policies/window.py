"""`window`: keep the most recent tokens only (no sinks)."""

from dataclasses import dataclass
from typing import ClassVar

from edgekv.runtime.cache import KVCache
from edgekv.runtime.policies.base import Policy, evict_oldest


@dataclass
class Window(Policy):
    name: ClassVar[str] = "window"
    summary: ClassVar[str] = "most recent tokens only"
    oldest_first: ClassVar[bool] = True
    reads_mass: ClassVar[bool] = False
    same_slots: ClassVar[bool] = True

    def make_room(self, cache: KVCache, n: int) -> None:
        evict_oldest(cache, n)
