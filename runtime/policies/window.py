"""`window`: keep the most recent tokens only (no sinks)."""

from dataclasses import dataclass
from typing import ClassVar

from edgekv.runtime.cache import KVCache
from edgekv.runtime.policies.base import Policy, evict_lowest


@dataclass
class Window(Policy):
    name: ClassVar[str] = "window"
    summary: ClassVar[str] = "most recent tokens only"

    def make_room(self, cache: KVCache, n: int) -> None:
        evict_lowest(cache, cache.orig_pos.astype(float), n - cache.free_count())
