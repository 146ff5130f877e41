"""Next-token choice from the last logits: greedy, or temperature with top-p (nucleus)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekv.runtime.errors import SettingError


@dataclass
class Sampler:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        numbers = (self.temperature, self.top_p)
        if not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                   for v in numbers) or not isinstance(self.seed, (int, np.integer)):
            raise SettingError(f"temperature and top_p must be numbers and seed an integer, not "
                               f"{self.temperature!r}, {self.top_p!r} and {self.seed!r}")
        # written so that NaN fails too
        if not (self.temperature >= 0 and np.isfinite(self.temperature) and 0 < self.top_p <= 1):
            raise SettingError(f"--temperature must be a finite number >= 0 and --top-p in "
                               f"(0, 1], not {self.temperature} and {self.top_p}")
        if self.seed < 0:
            raise SettingError(f"--seed must be >= 0, not {self.seed}")
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self.temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64)
        # The max is taken off before dividing: a tiny temperature (1e-310) then sends the
        # others to -inf and the top to 0, where dividing first made inf - inf = NaN.
        with np.errstate(over="ignore"):
            probs = np.exp((z - z.max()) / self.temperature)
        probs /= probs.sum()
        if self.top_p < 1.0:
            order = np.argsort(-probs)
            cum = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cum, self.top_p)) + 1]
            mask = np.zeros_like(probs)
            mask[keep] = probs[keep]
            probs = mask / mask.sum()
        return int(self.rng.choice(len(probs), p=probs))
