"""What a backend is: something that runs one decoder step against the cache's buffers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class StepOutput:
    logits: np.ndarray  # [1, c, V] float32 ([1, 1, V] after a last_only run that skipped rows)
    new_keys: np.ndarray  # [L, Hkv, c, D]
    new_values: np.ndarray  # [L, Hkv, c, D]
    attn_mass: np.ndarray  # [L, Hkv, capacity + c] float32
    # Fused-attention graphs rotate the chunk's keys themselves and leave them in the
    # cache's scratch rows: those keys [L, Hkv, c, D] and their positions [L, c]. None
    # where the graph does not (the runtime then rotates `new_keys`).
    rotated_keys: np.ndarray | None = None
    rotated_pos: np.ndarray | None = None
    # ... and the chunk's values as the cache stores them (int8 caches: quantized), [L, Hkv,
    # c, D]; None where the graph writes none.
    stored_values: np.ndarray | None = None


class Backend(Protocol):
    name: str

    def run(
        self,
        inputs_embeds: np.ndarray,
        chunk_pos: np.ndarray,
        slot_pos: np.ndarray,
        slot_bias: np.ndarray,
        mass_weight: np.ndarray,
        last_only: bool = False,
    ) -> StepOutput:
        """One decoder invocation over the cache buffers the backend was bound to.

        `last_only`: the caller needs the last row's logits only; a backend whose graph can skip
        the others (`logit_rows`) returns [1, 1, V], any other returns every row."""
        ...
