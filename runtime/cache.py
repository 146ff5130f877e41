"""The KV cache: fixed buffers of `capacity` slots plus a small per-slot metadata table.

Every array is indexed [layer, kv_head, slot] (K/V add a head_dim axis), so a policy may keep
different tokens in different heads. The buffers are allocated once; nothing here grows.
Keys are stored before RoPE; `graph_inputs` tells the graph where to rotate each slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekv.export.manifest import EMPTY_SLOT_BIAS
from edgekv.runtime.errors import BudgetError
from edgekv.runtime.mrope import MRopeSlots

EMPTY = -1  # orig_pos of an empty slot

TEXT, IMAGE = 0, 1  # modality codes


@dataclass
class KVCache:
    keys: np.ndarray  # [L, Hkv, capacity, D], pre-RoPE
    values: np.ndarray  # [L, Hkv, capacity, D]
    orig_pos: np.ndarray  # [L, Hkv, capacity] int64: position in the input stream, EMPTY if free
    count: np.ndarray  # [L, Hkv, capacity] int32: tokens this slot stands for (merges add up)
    score: np.ndarray  # [L, Hkv, capacity] float32: attention mass accumulated by the policy
    protected: np.ndarray  # [L, Hkv, capacity] bool: never evicted (sinks, system prompt)
    modality: np.ndarray  # [L, Hkv, capacity] int16: TEXT, IMAGE, ...
    group: np.ndarray  # [L, Hkv, capacity] int32: frame / turn id the token came from
    budget: int  # usable slots: slots at index >= budget stay empty (experiments, lower budget)
    evictions: int = 0  # slots freed by eviction so far, all heads counted once per token
    _ranks: np.ndarray | None = field(default=None, repr=False)
    # M-RoPE bundles (Qwen2-VL): the 3 position components of each slot (runtime/mrope.py).
    mrope: MRopeSlots | None = None

    @classmethod
    def allocate(
        cls,
        num_layers: int,
        num_kv_heads: int,
        capacity: int,
        head_dim: int,
        dtype: np.dtype | str = np.float32,
        budget: int | None = None,
        mrope: bool = False,
    ) -> KVCache:
        budget = capacity if budget is None else budget
        if not 0 < budget <= capacity:
            raise BudgetError(
                f"budget {budget} must be between 1 and the bundle's budget {capacity} "
                "(a bundle's budget can be lowered at run time, never raised: re-export)"
            )
        meta = (num_layers, num_kv_heads, capacity)
        return cls(
            keys=np.zeros((*meta, head_dim), dtype=dtype),
            values=np.zeros((*meta, head_dim), dtype=dtype),
            orig_pos=np.full(meta, EMPTY, dtype=np.int64),
            count=np.zeros(meta, dtype=np.int32),
            score=np.zeros(meta, dtype=np.float32),
            protected=np.zeros(meta, dtype=bool),
            modality=np.zeros(meta, dtype=np.int16),
            group=np.zeros(meta, dtype=np.int32),
            budget=budget,
            mrope=MRopeSlots.allocate(meta) if mrope else None,
        )

    @property
    def capacity(self) -> int:
        return self.orig_pos.shape[-1]

    @property
    def valid(self) -> np.ndarray:
        return self.orig_pos != EMPTY

    def occupied(self) -> int:
        """Slots in use in the fullest (layer, head)."""
        return int(self.valid.sum(-1).max())

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.keys, self.values, self.orig_pos, self.count,
                                      self.score, self.protected, self.modality, self.group))

    def evict(self, mask: np.ndarray) -> None:
        """Free the slots where `mask` ([L, Hkv, capacity]) is true. Protected slots refuse."""
        if np.any(mask & self.protected):
            raise BudgetError("a policy tried to evict a protected slot")
        freed = mask & self.valid
        if not freed.any():
            return
        self.evictions += int(freed.sum(-1).max())
        self.orig_pos[freed] = EMPTY
        self.count[freed] = 0
        self.score[freed] = 0.0
        self.protected[freed] = False
        self._ranks = None

    def free_slots(self, n: int) -> np.ndarray:
        """The first `n` free slots below the budget in every (layer, head): [L, Hkv, n]."""
        free = ~self.valid
        free[..., self.budget :] = False
        have = free.sum(-1).min()
        if have < n:
            raise BudgetError(
                f"{n} new tokens do not fit: {self.budget - have} of {self.budget} slots are "
                "occupied (the policy must evict first)"
            )
        # argsort of "not free" is stable: free slots come first, in slot order.
        return np.argsort(~free, axis=-1, kind="stable")[..., :n]

    def write(
        self,
        slots: np.ndarray,
        new_keys: np.ndarray,
        new_values: np.ndarray,
        positions: np.ndarray,
        score: np.ndarray | None = None,
        modality: int = TEXT,
        group: int = 0,
        protected: bool | np.ndarray = False,
    ) -> None:
        """Store a chunk's K/V ([L, Hkv, c, D]) at `slots` ([L, Hkv, c])."""
        layer = np.arange(slots.shape[0])[:, None, None]
        head = np.arange(slots.shape[1])[None, :, None]
        self.keys[layer, head, slots] = new_keys
        self.values[layer, head, slots] = new_values
        self.orig_pos[layer, head, slots] = positions
        self.count[layer, head, slots] = 1
        self.score[layer, head, slots] = 0.0 if score is None else score
        self.protected[layer, head, slots] = protected
        self.modality[layer, head, slots] = modality
        self.group[layer, head, slots] = group
        self._ranks = None

    def ranks(self) -> np.ndarray:
        """Rank of each valid slot's original position within its (layer, head); cached."""
        if self._ranks is None:
            key = np.where(self.valid, self.orig_pos, np.iinfo(np.int64).max)
            order = np.argsort(key, axis=-1, kind="stable")
            ranks = np.empty_like(order)
            np.put_along_axis(ranks, order, np.arange(self.capacity), axis=-1)
            self._ranks = ranks
        return self._ranks

    def graph_inputs(
        self, positions: np.ndarray, position_mode: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slot_pos, slot_bias, chunk_pos) for a chunk whose stream positions are `positions`.

        `cache` mode: positions are ranks inside the cache (StreamingLLM pos-shift, Inf-MLLM
        length extrapolation), so the model never sees a position beyond budget + chunk.
        `absolute` mode: positions are where the tokens stood in the input stream.
        """
        valid = self.valid
        if position_mode == "cache":
            slot_pos = np.where(valid, self.ranks(), 0)
            start = int(valid.sum(-1).max())
            chunk_pos = np.arange(start, start + len(positions), dtype=np.int64)
        elif position_mode == "absolute":
            slot_pos = np.where(valid, self.orig_pos, 0)
            chunk_pos = np.asarray(positions, dtype=np.int64)
        else:
            raise ValueError(f"unknown position mode {position_mode!r} (cache or absolute)")
        counts = np.maximum(self.count, 1).astype(np.float32)
        slot_bias = np.where(valid, np.log(counts), np.float32(EMPTY_SLOT_BIAS))
        return slot_pos, slot_bias.astype(np.float32), chunk_pos
