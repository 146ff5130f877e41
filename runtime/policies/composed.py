"""`A+B`: two policies in one cache, a prefill compressor and a generation evictor.

`structured+h2o` compresses the frames and prompts fed in (chunks of more than one token) the
way `structured` does, and makes room for the answer's tokens (one per decode step) the way
`h2o` does; `snapkv+streaming` is SnapKV's setting: the prompt scored by its last queries, then
StreamingLLM's sinks + recent window for a long generation. Every hook of a call goes to the
policy of that call's size. Both share the cache's per-slot `score`: what the first left there
the second reads on (h2o keeps adding to it; snapkv overwrites it with its window's view).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekv.runtime.cache import KVCache
from edgekv.runtime.policies.base import Chunk, Policy


@dataclass
class Composed(Policy):
    prefill: Policy = field(default_factory=Policy)  # chunks of more than one token
    decode: Policy = field(default_factory=Policy)  # single tokens (generation)
    # make_room is the first hook of every decoder call; the size it saw picks the policy
    # for the call's mass_weight, observe and admit too
    _chunked: bool = field(default=False, init=False, repr=False)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.prefill.name}+{self.decode.name}"

    @property
    def summary(self) -> str:  # type: ignore[override]
        return f"{self.prefill.name} for prompts and frames, {self.decode.name} for answers"

    @property
    def reads_mass(self) -> bool:  # type: ignore[override]
        return self.prefill.reads_mass or self.decode.reads_mass

    @property
    def same_slots(self) -> bool:  # type: ignore[override]
        return self.prefill.same_slots and self.decode.same_slots

    @property
    def oldest_first(self) -> bool:  # type: ignore[override]
        return self.prefill.oldest_first and self.decode.oldest_first

    def min_budget(self, chunk: int) -> int:
        return max(self.prefill.min_budget(chunk), self.decode.min_budget(1))

    def _now(self) -> Policy:
        return self.prefill if self._chunked else self.decode

    def make_room(self, cache: KVCache, n: int) -> None:
        self._chunked = n > 1
        self._now().make_room(cache, n)

    def mass_weight(self, c: int) -> np.ndarray:
        return self._now().mass_weight(c)

    def observe(self, cache: KVCache, slot_mass: np.ndarray) -> None:
        self._now().observe(cache, slot_mass)

    def admit(self, cache: KVCache, chunk: Chunk) -> None:
        self._now().admit(cache, chunk)

    def params(self) -> dict[str, object]:
        first, second = self.prefill.name, self.decode.name
        if first == second:  # h2o+h2o: one name for both would keep only the second's values
            first, second = f"prefill.{first}", f"decode.{second}"
        return {f"{first}.{k}": v for k, v in self.prefill.params().items()} | {
            f"{second}.{k}": v for k, v in self.decode.params().items()}
