"""The KV cache: fixed buffers of `capacity` slots plus a small per-slot metadata table.

Every array is indexed [layer, kv_head, slot] (K/V add a head_dim axis), so a policy may keep
different tokens in different heads. The buffers are allocated once; nothing here grows.
Keys are stored before RoPE; `graph_inputs` tells the graph where to rotate each slot. With a
`rotation` (bundles whose `key_rope` is "cached") they are stored rotated instead, and
`prerope_keys` gives policies the pre-RoPE form.

Ranks (the order of stream positions inside each (layer, head), runtime/rank_order.py) and the
slot bias are kept up to date incrementally: a decode step at budget 2048 must not pay for a
sort of every head.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from edgekv.export.manifest import EMPTY_SLOT_BIAS
from edgekv.runtime import huge_pages
from edgekv.runtime.errors import BudgetError
from edgekv.runtime.key_rotation import NO_DROP, KeyRotation
from edgekv.runtime.kv_codec import KVCodec
from edgekv.runtime.mrope import MRopeSlots
from edgekv.runtime.rank_order import RankOrder

EMPTY = -1  # orig_pos of an empty slot
TEXT, IMAGE = 0, 1  # modality codes
NO_PLACE = -1  # `place` of a token that has no grid place (text)


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
    place: np.ndarray  # [L, Hkv, capacity] int32: grid place inside its frame, NO_PLACE for text
    budget: int  # usable slots: slots at index >= budget stay empty (experiments, lower budget)
    evictions: int = 0  # tokens evicted so far (counted in the fullest head)
    # tokens not kept because an earlier slot holds them (structured: merged, or dropped as a
    # repeat), counted like evictions but apart: they were not pushed out by the budget
    merged: int = 0
    last_pos: int = EMPTY  # largest stream position ever written
    # Order of orig_pos per head (`rank`), streaming evictions counted, not applied.
    ranks: RankOrder = field(default=None, repr=False)
    bias: np.ndarray = field(default=None, repr=False)  # slot_bias: log(count) or EMPTY_SLOT_BIAS
    n_valid: np.ndarray = field(default=None, repr=False)  # [L, Hkv] occupied slots
    # M-RoPE bundles (Qwen2-VL): the 3 position components of each slot (runtime/mrope.py).
    mrope: MRopeSlots | None = None
    # Keys cached rotated (runtime/key_rotation.py): where each key sits, and each head's shift.
    rotation: KeyRotation | None = None
    # What moved in the rank order since the key rotation was last aligned, when that is all
    # one single-token eviction per head: [L, Hkv] the rank each head dropped (NO_DROP: none).
    # None when unknown (several evictions, a rerank): the next alignment then scans the cache.
    rank_drop: np.ndarray | None = field(default=None, repr=False)
    # [L, Hkv]: the slot each head's last single-token eviction freed; the capacity (no slot)
    # before any. A decode step's new token goes there without a scan for a free slot
    # (checked, `free_slots`).
    last_freed: np.ndarray | None = field(default=None, repr=False)
    # Every slot ever written is below this row (a high-water mark; only `write` fills
    # slots). Fused-attention bundles attend to rows [0, live_rows) only (manifest LIVE_ROWS).
    live_rows: int = 0
    # Fused-attention bundles: the K/V arrays with scratch rows after the capacity, which
    # `keys`/`values` are views of (the graph writes the chunk there, in place). Not part of a
    # snapshot: the views carry the contents, the scratch rows nothing.
    buffers: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False,
                                                          metadata={"snapshot": False})
    # int8 caches (manifest `kv_quant`): keys and values hold q, the value is q * scale. Fixed
    # for the bundle, so not part of a snapshot.
    codec: KVCodec | None = field(default=None, repr=False, metadata={"snapshot": False})

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
        scratch_rows: int = 0,
    ) -> KVCache:
        budget = capacity if budget is None else budget
        if not 0 < budget <= capacity:
            raise BudgetError(
                f"budget {budget} must be between 1 and the bundle's budget {capacity} "
                "(a bundle's budget can be lowered at run time, never raised: re-export)"
            )
        meta = (num_layers, num_kv_heads, capacity)
        rows = (num_layers, num_kv_heads, capacity + scratch_rows, head_dim)
        buffers = np.zeros(rows, dtype=dtype), np.zeros(rows, dtype=dtype)
        # the per-slot table in huge pages: a decode step writes one slot of each in every head
        orig_pos, count, score, protected, modality, group, place, rank, bias, n_valid = \
            huge_pages.zeros([(meta, np.int64), (meta, np.int32), (meta, np.float32),
                              (meta, bool), (meta, np.int16), (meta, np.int32),
                              (meta, np.int32), (meta, RankOrder.dtype_for(capacity)),
                              (meta, np.float32), (meta[:2], np.int64)])
        orig_pos.fill(EMPTY)
        place.fill(NO_PLACE)
        bias.fill(EMPTY_SLOT_BIAS)
        return cls(
            keys=buffers[0][:, :, :capacity],
            values=buffers[1][:, :, :capacity],
            orig_pos=orig_pos,
            count=count,
            score=score,
            protected=protected,
            modality=modality,
            group=group,
            place=place,
            budget=budget,
            ranks=RankOrder(rank),
            bias=bias,
            n_valid=n_valid,
            mrope=MRopeSlots.allocate(meta) if mrope else None,
            buffers=buffers if scratch_rows else None,
        )

    @property
    def capacity(self) -> int:
        return self.orig_pos.shape[-1]

    @functools.cached_property
    def heads(self) -> tuple[np.ndarray, np.ndarray]:
        """(layer [L, 1], head [1, Hkv]): with a slot per head [L, Hkv], a fancy index of
        one slot in every head (made once: a decode step indexes so a dozen times)."""
        return np.indices(self.n_valid.shape, sparse=True)

    @property
    def rank(self) -> np.ndarray:
        """[L, Hkv, capacity]: each slot's place in its head's stream order (0..n-1), 0 if
        empty. Writable (settled: nothing pending)."""
        return self.ranks.settled()

    @property
    def valid(self) -> np.ndarray:
        return self.orig_pos != EMPTY

    def occupied(self) -> int:
        """Slots in use in the fullest (layer, head)."""
        return int(self.n_valid.max())

    def free_count(self) -> np.ndarray:
        """Free slots below the budget per (layer, head): [L, Hkv]. Tokens only ever go to
        slots below the budget (`free_slots`), so this is budget - occupied."""
        return self.budget - self.n_valid

    def nbytes(self) -> int:
        kv = self.buffers or (self.keys, self.values)
        arrays = (*kv, self.orig_pos, self.count, self.score, self.protected,
                  self.modality, self.group, self.place, self.ranks.stored, self.bias,
                  self.n_valid)
        return sum(a.nbytes for a in arrays)

    def slot_of_rank(self, rank: int) -> np.ndarray:
        """[L, Hkv]: the slot holding `rank` in each head (0 where a head has no such token)."""
        if self.last_freed is not None:
            # Decoding oldest-first fills the slot it freed, so the slots past the oldest kept
            # ones form a ring: the token now at `rank` is usually in the slot after the one
            # freed last (past the budget: back to `rank`, where a ring filled in order starts).
            # Checked; a scan of the whole cache (a pass over every rank) otherwise.
            guess = self.last_freed + 1
            guess[guess >= self.budget] = rank
            at = (*self.heads, guess)
            stored = self.ranks.stored_value(rank)  # an empty slot stores 0: checked apart
            if (self.ranks.stored[at] == stored).all() and (
                    stored or (self.orig_pos[at] != EMPTY).all()):
                return guess
        target = self.rank == rank
        if rank == 0:  # empty slots have rank 0 too
            target &= self.valid
        return target.argmax(-1)

    def evict(self, mask: np.ndarray, repeats: bool = False) -> None:
        """Free the slots where `mask` ([L, Hkv, capacity]) is true. Protected slots refuse.
        `repeats`: they hold tokens an earlier slot stands for, counted as `merged`."""
        if np.any(mask & self.protected):
            raise BudgetError("a policy tried to evict a protected slot")
        freed = mask & self.valid
        per_head = freed.view(np.uint8).sum(-1, dtype=np.int64)  # a bool sum casts: 3x slower
        most = int(per_head.max())
        if most == 0:
            return
        if repeats:
            self.merged += most
        else:
            self.evictions += most
        if most == 1:  # decode: one slot per head at most, found without a full nonzero scan
            layer, head = np.nonzero(per_head)
            self._evict_one((layer, head, freed.argmax(-1)[layer, head]))
            return
        self.rank_drop = None
        self._drop_ranks(freed, most)
        self._clear(np.nonzero(freed))
        self.n_valid -= per_head

    def evict_rank(self, rank: int, heads: np.ndarray) -> bool:
        """Free the token at `rank` in every head where `heads` is true (each holds more than
        `rank` tokens): an oldest-first decode step. False, freeing nothing, where one of
        them is protected; the caller then takes its general path."""
        slot = self.slot_of_rank(rank)
        layer, head = self.heads if heads.all() else np.nonzero(heads)
        at = (layer, head, slot[layer, head])
        if np.any(self.protected[at]):
            return False
        if (self.orig_pos[at] == EMPTY).any():
            raise BudgetError(f"a head holds no token at rank {rank} to evict")
        self._evict_one(at, rank)
        self.evictions += 1 if layer.size else 0
        return True

    def _evict_one(self, at: tuple[np.ndarray, np.ndarray, np.ndarray],
                   rank: int | None = None) -> None:
        """Free one slot in some heads; `rank`: the rank each of them frees, if known."""
        if not at[0].size:
            return
        every = at[0].ndim == 2  # every head (`heads`' sparse indices): each drops what it frees
        if every:
            gone = self.ranks.at(at) if rank is None else rank
        else:
            gone = np.full(self.n_valid.shape, NO_DROP, dtype=np.int32)
            gone[at[:2]] = self.ranks.at(at)
        if self.rank_drop is not None and (self.rank_drop == NO_DROP).all():
            self.rank_drop[...] = gone
        else:  # a second drop before the rotation caught up with the first
            self.rank_drop = None
        if self.last_freed is None:
            self.last_freed = np.full(self.n_valid.shape, self.capacity, dtype=np.int64)
        self.ranks.drop(gone)
        self._clear(at)
        if every:  # whole arrays: cheaper than the same values through an index
            self.last_freed[...] = at[2]
            self.n_valid -= 1
        else:
            self.last_freed[at[:2]] = at[2]
            self.n_valid[at[:2]] -= 1

    def _clear(self, at: tuple[np.ndarray, ...]) -> None:
        self.orig_pos[at] = EMPTY
        self.count[at] = 0
        self.score[at] = 0.0
        self.protected[at] = False
        self.place[at] = NO_PLACE
        self.bias[at] = EMPTY_SLOT_BIAS
        self.ranks.stored[at] = 0

    def _drop_ranks(self, freed: np.ndarray, most: int) -> None:
        """Close the gaps the freed slots (`most` > 1 in some head) leave in the rank order."""
        rank = self.rank
        if most <= 8:  # a few tokens per step: compare against each
            freed_rank = np.where(freed, rank, np.iinfo(rank.dtype).max)
            smallest = np.partition(freed_rank, most - 1, axis=-1)[..., :most]
            below = (smallest[..., None, :] < rank[..., :, None]).sum(-1)
        else:
            marks = np.zeros(rank.shape[:2] + (self.capacity + 1,), dtype=np.int64)
            layer, head, slot = np.nonzero(freed)
            marks[layer, head, rank[layer, head, slot] + 1] = 1
            below = np.take_along_axis(np.cumsum(marks, -1), rank, axis=-1)
        rank -= below

    def free_slots(self, n: int) -> np.ndarray:
        """`n` free slots below the budget in every (layer, head): [L, Hkv, n]."""
        if n == 1 and self.last_freed is not None and (self.n_valid == self.budget - 1).all():
            # One free slot per head: if the one evicted last is free and usable, it is that.
            slot = self.last_freed
            if slot.max() < self.budget and (self.orig_pos[(*self.heads, slot)] == EMPTY).all():
                return slot[..., None].copy()
        fullest = self.n_valid.max()
        if self.budget - fullest < n:
            raise BudgetError(
                f"{n} new tokens do not fit: {fullest} of {self.budget} slots are "
                "occupied (the policy must evict first)"
            )
        taken = self.valid[..., : self.budget]
        if n == 1:
            return np.argmin(taken, axis=-1)[..., None]
        # The first n free slots of each head (linear time; every head has at least n).
        free = ~taken
        first = free & (np.cumsum(free, axis=-1) <= n)
        return np.nonzero(first)[-1].reshape(*taken.shape[:2], n)

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
        place: np.ndarray | None = None,
        rotated: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
        stored_values: np.ndarray | None = None,
    ) -> None:
        """Store a chunk's K/V ([L, Hkv, c, D]) at `slots` ([L, Hkv, c]).

        `rotated`: the chunk's keys as the graph already rotated them, and the positions
        [L, c] it rotated them to (StepOutput.rotated_keys); rotated-key caches store those
        where the positions are the ones wanted, instead of rotating `new_keys` again.
        `stored_values`: the chunk's values as the cache stores them (StepOutput.stored_values),
        which int8 caches take instead of quantizing `new_values` again.
        """
        layer, head = self.heads[0][..., None], self.heads[1][..., None]
        positions = np.asarray(positions, dtype=np.int64)
        c = len(positions)
        # One token (decode) without reductions: each numpy call here costs ~10 us on caches
        # cold from the graph, and a decode step writes a dozen arrays.
        if c == 1:
            first = last_pos = int(positions[0])
        else:
            first, last_pos = positions.min(), int(positions.max())
        in_order = first > self.last_pos and (c == 1 or bool(np.all(np.diff(positions) > 0)))
        new_rank = None
        if in_order:  # stream order: the chunk ranks after everything already cached
            new_rank = self.n_valid[..., None] + (0 if c == 1 else np.arange(c))
            self.ranks.put((layer, head, slots), new_rank)
        if self.rotation is None:
            self.keys[layer, head, slots] = self._stored(new_keys, layer)
        if stored_values is None or stored_values.dtype != self.values.dtype:
            stored_values = self._stored(new_values, layer, values=True)
        self.values[layer, head, slots] = stored_values
        self.orig_pos[layer, head, slots] = positions
        self.count[layer, head, slots] = 1
        self.score[layer, head, slots] = 0.0 if score is None else score
        self.protected[layer, head, slots] = protected
        self.modality[layer, head, slots] = modality
        self.group[layer, head, slots] = group
        self.place[layer, head, slots] = NO_PLACE if place is None else place
        self.bias[layer, head, slots] = 0.0
        self.n_valid += c
        self.live_rows = max(self.live_rows, int(slots.max()) + 1)
        self.last_pos = max(self.last_pos, last_pos)
        if not in_order:
            self.rerank()
        if self.rotation is not None:  # rotated to where the next call will want them
            if not self.rotation.by_rank:
                at = positions
            else:
                at = new_rank if in_order else self.ranks.at((layer, head, slots))
            pos = self.rotation.write_pos(at, layer, head)
            done, done_pos = rotated
            # `==` on the arrays: np.array_equal cost ~50 us a decode step on these 90 values
            if done is None or done.dtype != self.keys.dtype or not (
                    pos == done_pos[:, None]).all():
                done = self._stored(self.rotation.place(new_keys, pos), layer)
            self.keys[layer, head, slots] = done
            self.rotation.key_pos[layer, head, slots] = pos
            if c == 1:
                self.rotation.newest[...] = slots[..., 0]
            else:
                last = np.argmax(self.ranks.at((layer, head, slots)), axis=-1)[..., None]
                self.rotation.newest[...] = np.take_along_axis(slots, last, -1)[..., 0]

    def merge_into(self, target: np.ndarray, new_keys: np.ndarray, new_values: np.ndarray,
                   where: np.ndarray | None = None) -> None:
        """Fold one new token per (layer, head) into slots `target` ([L, Hkv]), where `where`.

        K/V become the count-weighted mean and the slot stands for one more token
        (slot_bias = log count): n merged near-duplicates keep the attention weight n copies
        of their mean would get.
        """
        layer, head = np.nonzero(np.ones(target.shape, bool) if where is None else where)
        slot = target[layer, head]
        n = self.count[layer, head, slot].astype(np.float32)[:, None]
        at = (layer, head, slot)
        for buf, new in ((self.keys, new_keys), (self.values, new_values)):
            is_keys = buf is self.keys
            old = self.prerope_keys(at) if is_keys else self._read(buf[at], layer, values=True)
            mean = (old.astype(np.float32) * n + new[layer, head]) / (n + 1)
            if is_keys and self.rotation is not None:
                mean = self.rotation.place(mean, self.rotation.key_pos[at])
            buf[at] = self._stored(mean, layer, values=not is_keys)
        self.count[layer, head, slot] += 1
        self.bias[layer, head, slot] = np.log(self.count[layer, head, slot])
        if self.rotation is not None:  # a merged key is not the one its float copy holds
            self.rotation.turned_exact = None

    def prerope_keys(self, index: tuple[np.ndarray, ...]) -> np.ndarray:
        """`keys[index]` before RoPE, whichever way the cache stores them."""
        keys = self._read(self.keys[index], index[0])
        if self.rotation is None:
            return keys
        return self.rotation.unplace(keys, self.rotation.key_pos[index])

    def _stored(self, x: np.ndarray, layer: np.ndarray, values: bool = False) -> np.ndarray:
        """K/V of layers `layer` as the cache stores them (int8 caches: encoded)."""
        if self.codec is None:
            return x
        return self.codec.encode(x, layer, values)

    def _read(self, stored: np.ndarray, layer: np.ndarray, values: bool = False) -> np.ndarray:
        if self.codec is None:
            return stored
        return self.codec.decode(stored, layer, values)

    def align_keys(self, chunk_end: int) -> np.ndarray:
        """Rotated-key caches: turn the keys that must move (KeyRotation.align) for a chunk
        ending before `chunk_end`; returns the graph's pos_shift."""
        shift = self.rotation.align(self.keys, self.orig_pos, EMPTY, self.ranks, chunk_end,
                                    self.heads, self.rank_drop)
        if self.rank_drop is None:
            self.rank_drop = np.full(self.n_valid.shape, NO_DROP, dtype=np.int32)
        else:
            self.rank_drop.fill(NO_DROP)
        return shift

    def rerank(self) -> None:
        """Recompute every head's rank order from scratch (after out-of-order writes)."""
        self.rank_drop = None
        key = np.where(self.valid, self.orig_pos, np.iinfo(np.int64).max)
        order = np.argsort(key, axis=-1, kind="stable")
        rank = self.rank
        np.put_along_axis(rank, order, np.arange(self.capacity), axis=-1)
        rank[~self.valid] = 0

    def graph_inputs(
        self, positions: np.ndarray, position_mode: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slot_pos, slot_bias, chunk_pos) for a chunk whose stream positions are `positions`.

        `cache` mode: positions are ranks inside the cache (StreamingLLM pos-shift, Inf-MLLM
        length extrapolation), so the model never sees a position beyond budget + chunk.
        `absolute` mode: positions are where the tokens stood in the input stream.
        Rotated-key caches (`rotation`) turn the keys that must move first, and give the
        graph's pos_shift [L, Hkv] where slot_pos would go (`align_keys`).
        """
        if position_mode == "cache":
            start = int(self.n_valid.max())
            chunk_pos = np.arange(start, start + len(positions), dtype=np.int64)
        elif position_mode == "absolute":
            chunk_pos = np.asarray(positions, dtype=np.int64)
        else:
            raise ValueError(f"unknown position mode {position_mode!r} (cache or absolute)")
        if self.rotation is not None:
            slot_pos = self.align_keys(int(chunk_pos[-1]) + 1)
        elif position_mode == "cache":
            slot_pos = self.rank.astype(np.int64)
        else:
            slot_pos = np.where(self.valid, self.orig_pos, 0)
        return slot_pos, self.bias, chunk_pos
