"""What a backend is: something that runs one decoder step against the cache's buffers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class StepOutput:
    logits: np.ndarray  # [1, c, V] float32
    new_keys: np.ndarray  # [L, Hkv, c, D]
    new_values: np.ndarray  # [L, Hkv, c, D]
    attn_mass: np.ndarray  # [L, Hkv, capacity + c] float32


class Backend(Protocol):
    name: str

    def run(
        self,
        inputs_embeds: np.ndarray,
        chunk_pos: np.ndarray,
        slot_pos: np.ndarray,
        slot_bias: np.ndarray,
        mass_weight: np.ndarray,
    ) -> StepOutput:
        """One decoder invocation over the cache buffers the backend was bound to."""
        ...
