"""Keys cached rotated (manifest `key_rope` "cached"): the runtime's half of that contract.

A "graph" bundle rotates every cached key to its `slot_pos` on every call: at budget 2048 that
was 3.0 ms of a 16 ms int4 decode step here, for keys that mostly sit where they sat before. A
"cached" bundle attends with the cached keys as they are and rotates only the chunk, at
`chunk_pos + pos_shift` for each (layer, KV head). Attention scores depend on differences of
positions only, so the graph computes exactly what the "graph" bundle does as long as every
valid key is rotated to `slot_pos + pos_shift` of its head. `align` keeps that true:

- When a streaming policy evicts the oldest token, every later rank drops by one: raising the
  head's shift by one absorbs it, and only the keys whose rank did not move (the sinks) are
  re-rotated. A policy that evicts from the middle turns every key older than the gap
  (h2o, snapkv: ~50 ms per decode step at budget 2048; `Session.open` warns).
- The shift grows by one per eviction; once a position would pass the bundle's RoPE table the
  head is re-normalised (shift 0, every key re-rotated): once per four budgets of evictions.

Re-rotations are exact rotations computed in float64 (a key rotated a million times drifts by
the float32 rounding of each step only, not by |cos² + sin²| - 1 per step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekv.runtime import huge_pages
from edgekv.runtime.kv_codec import Q_MAX, KVCodec
from edgekv.runtime.rank_order import RankOrder

NO_DROP = np.iinfo(np.int32).max  # KVCache.rank_drop of a head that evicted nothing


@dataclass
class KeyRotation:
    # Settings are 0-d arrays too: Snapshot.restore copies a nested dataclass array by array.
    inv_freq: np.ndarray  # [D/2] float64 rotary frequencies
    scale: np.ndarray  # [] float64: rope_attention_scaling (keys are stored times it)
    limit: np.ndarray  # [] int64: positions stay below this (the bundle's RoPE table)
    by_rank: np.ndarray  # [] bool: slot positions are ranks (position mode "cache")
    key_pos: np.ndarray  # [L, Hkv, capacity] int64: the position each cached key is rotated to
    shift: np.ndarray  # [L, Hkv] int64: pos_shift, the graph input
    rotated: np.ndarray  # [] int64: keys re-rotated so far (what this costs; `edgekv bench`)
    newest: np.ndarray  # [L, Hkv] int64: the slot written last (the highest rank)
    # [] bool: one shift per layer, shared by its heads (fused-attention bundles rotate a
    # layer's chunk once); heads that fall behind the layer's shift are turned to it.
    per_layer: np.ndarray = field(default_factory=lambda: np.array(False))
    # Memos of a streaming step, each checked before use: the flat indices of the keys the
    # last step turned (the sinks), and (delta, gain, cos, sin) of the last uniform turn.
    sinks_turned: np.ndarray | None = field(default=None, repr=False)
    # int8 caches: the keys the last turn turned, unrounded: (flat indices, ascending; the
    # stream positions they hold, checked; keys [n, D/2] as complex pairs in units of the
    # layer's scale, `_turn_int8`; their largest modulus). Turned from
    # the int8 keys every time, a sink would be rounded again at each eviction and drift (a
    # 32k-token stream at budget 512: perplexity 23 -> 79); from this copy a key is rounded
    # once more than the others, at its first turn.
    turned_exact: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = field(
        default=None, repr=False)
    trig: tuple[int, float, np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    phasor: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def allocate(cls, meta: tuple[int, int, int], inv_freq: list[float], scale: float,
                 limit: int, by_rank: bool, per_layer: bool = False) -> KeyRotation:
        return cls(np.asarray(inv_freq, dtype=np.float64), np.array(scale, dtype=np.float64),
                   np.array(limit, dtype=np.int64), np.array(by_rank),
                   huge_pages.zeros([(meta, np.int64)])[0], np.zeros(meta[:2], dtype=np.int64),
                   np.array(0, dtype=np.int64), np.zeros(meta[:2], dtype=np.int64),
                   np.array(per_layer))

    def turn(self, keys: np.ndarray, delta: np.ndarray | int, gain: float = 1.0) -> np.ndarray:
        """`keys` [..., D] rotated by `delta` [...] positions (rotate-half layout), times gain;
        computed in float64."""
        half = keys.shape[-1] // 2
        delta = _one_delta(delta)
        if isinstance(delta, int):  # one delta for all (a streaming step: the sinks by 1)
            cos, sin = self._trig(delta, gain)
        else:  # few distinct deltas per call: trigonometry once each
            distinct, which = np.unique(delta, return_inverse=True)
            angle = distinct.astype(np.float64)[:, None] * self.inv_freq
            which = which.reshape(delta.shape)
            cos = np.concatenate([np.cos(angle)] * 2, -1)[which] * gain
            sin = (np.sin(angle) * gain)[which]
        # Halves updated in place: a gather of the swapped halves took 440 us for 360 keys on
        # caches cold from the graph, these two slices 171 us.
        x = keys.astype(np.float64)
        out = x * cos
        out[..., :half] -= x[..., half:] * sin
        out[..., half:] += x[..., :half] * sin
        return out.astype(keys.dtype)

    def _trig(self, delta: int, gain: float) -> tuple[np.ndarray, np.ndarray]:
        """(cos [D], sin [D/2]) times gain for one delta; the last one is kept (a stream
        turns its sinks by 1 at every step)."""
        if self.trig is None or self.trig[:2] != (delta, gain):
            angle = delta * self.inv_freq
            self.trig = (delta, gain, np.concatenate([np.cos(angle)] * 2) * gain,
                         np.sin(angle) * gain)
        return self.trig[2], self.trig[3]

    def place(self, keys: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Pre-RoPE keys as the cache stores them at `pos` (what the graph's RoPE gives)."""
        return self.turn(keys, pos, float(self.scale))

    def unplace(self, keys: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Cached keys at `pos` back to pre-RoPE (policies compare and merge keys so)."""
        return self.turn(keys, -np.asarray(pos), 1.0 / float(self.scale))

    def write_pos(self, slot_pos: np.ndarray, layer: np.ndarray, head: np.ndarray) -> np.ndarray:
        """Where a key written now is rotated to: its slot position plus its head's shift."""
        return slot_pos + self.shift[layer, head]

    def align(self, keys: np.ndarray, orig_pos: np.ndarray, empty: int, ranks: RankOrder,
              chunk_end: int, heads: tuple[np.ndarray, np.ndarray],
              rank_drop: np.ndarray | None = None) -> np.ndarray:
        """Re-rotate what must move so every valid key (orig_pos != empty) sits at its slot
        position (its rank in `ranks`) + shift; the new shift [L, Hkv] (pos_shift). The ranks
        are settled only where the whole order is read. `chunk_end`: one past the chunk's last
        position. `heads`: the cache's sparse (layer, head) index (KVCache.heads). `rank_drop`
        [L, Hkv]: the rank each head dropped since the last call, when that is all that
        changed (KVCache.rank_drop); None: the whole cache is checked. int8 `keys` (an int8
        cache, in units of each layer's scale) turn without their scales (`_turn_int8`)."""
        if not self.by_rank:
            return self.shift  # stream positions never move: keys stay where they were written
        # Each head follows its newest key: when older tokens are evicted, the recent ranks
        # all move by the same amount, and only the keys older than the gap turn.
        layer, head = heads
        newest = self.newest
        found = orig_pos[layer, head, newest] != empty
        all_found = bool(found.all())
        if not all_found:  # the newest token was dropped
            newest = np.argmax(np.where(orig_pos != empty, ranks.settled(), -1), axis=-1)
            found = orig_pos[layer, head, newest] != empty
        top = ranks.at((layer, head, newest))
        shift = self.key_pos[layer, head, newest] - top
        if self.per_layer:  # the largest shift of the layer's heads (a streaming policy
            # keeps them equal; others turn the heads behind it)
            if not all_found:
                shift = np.where(found, shift, np.iinfo(np.int64).min)
                found = found.any(-1, keepdims=True)
            shift, top = shift.max(-1, keepdims=True), top.max(-1, keepdims=True)
        over = shift + np.maximum(top + 1, chunk_end) > self.limit
        shift = np.broadcast_to(np.where(over if all_found else over | ~found, 0, shift),
                                self.shift.shape)
        flat, delta = self._off_place(orig_pos, empty, ranks, shift, rank_drop)
        if flat.size:
            at = np.unravel_index(flat, orig_pos.shape)
            if delta is None:
                delta = ranks.at(at) + shift[at[:2]] - self.key_pos[at]
            if keys.dtype != np.int8:
                for piece in _pieces(flat.size):
                    part = tuple(a[piece] for a in at)
                    keys[part] = self.turn(keys[part], _part(delta, piece))
            else:
                self._turn_int8(keys, at, flat, orig_pos, delta)
            self.key_pos[at] += delta
            self.rotated += len(at[0])
        self.shift[...] = shift
        return self.shift

    def _turn_int8(self, keys: np.ndarray, at: tuple[np.ndarray, ...], flat: np.ndarray,
                   orig_pos: np.ndarray, delta: np.ndarray | int) -> None:
        """Turn the int8 keys at `at` (flat indices `flat`, ascending) by `delta`, in place.

        A key in units of its layer's scale is turned as complex numbers (rotate-half pairs
        (x_i, x_i+D/2) as x_i + j x_i+D/2; a turn is one product), then rounded: no scale is
        applied either way, and a streaming step is three numpy calls on the sinks (~80 us
        less a decode step than the float turn and a re-encode, caches cold from the graph).
        A turn keeps each pair's modulus: keys whose moduli are all within the int8 range
        never saturate, and skip that pass.
        Keys the last turn turned start from their unrounded copy (`turned_exact`): a
        streaming cache turns its sinks at every eviction."""
        tokens = orig_pos[at]
        exact = self.turned_exact
        if exact is not None and exact[0] is flat and np.array_equal(exact[1], tokens):
            turned, largest = exact[2], exact[3]  # a decode step turning the same sinks
        else:
            turned = self._units(keys[at])
            if exact is not None and exact[0].size:
                where = np.minimum(np.searchsorted(exact[0], flat), exact[0].size - 1)
                same = (exact[0][where] == flat) & (exact[1][where] == tokens)
                turned[same] = exact[2][where[same]]
            largest = max((float(np.abs(turned[piece]).max()) for piece in _pieces(len(flat))),
                          default=0.0)
        self._phase(turned, delta)
        self.turned_exact = (flat, tokens, turned, largest)
        for piece in _pieces(len(flat)):
            pairs = turned[piece].view(np.float32).reshape(-1, turned.shape[1], 2)
            # back to rotate-half [n, 2, D/2]. Moduli within Q_MAX leave half a step for the
            # float32 products' error before a coordinate could round past it.
            q = KVCodec.round(pairs.transpose(0, 2, 1), bounded=largest <= Q_MAX)
            keys[tuple(a[piece] for a in at)] = q.reshape(len(q), -1)

    @staticmethod
    def _units(q: np.ndarray) -> np.ndarray:
        """int8 keys [n, D] as complex pairs [n, D/2] (complex64)."""
        half = q.shape[-1] // 2
        z = np.empty((q.shape[0], half), dtype=np.complex64)
        z.real, z.imag = q[:, :half], q[:, half:]
        return z

    def _phase(self, turned: np.ndarray, delta: np.ndarray | int) -> None:
        """Multiply complex pairs [n, D/2] by exp(j delta inv_freq), in place: one delta (the
        last one's factors are kept: a stream turns its sinks by 1 at every step), or one per
        key (factors once per distinct delta)."""
        delta = _one_delta(delta)
        if isinstance(delta, int):
            if self.phasor is None or self.phasor[0] != delta:
                self.phasor = (delta, np.exp(1j * delta * self.inv_freq).astype(np.complex64))
            turned *= self.phasor[1]
            return
        distinct, which = np.unique(delta, return_inverse=True)
        factors = np.exp(1j * distinct[:, None] * self.inv_freq).astype(np.complex64)
        for piece in _pieces(len(turned)):
            turned[piece] *= factors[which[piece]]

    def _off_place(self, orig_pos: np.ndarray, empty: int, ranks: RankOrder,
                   shift: np.ndarray, rank_drop: np.ndarray | None
                   ) -> tuple[np.ndarray, int | None]:
        """Flat indices of the valid keys not at slot_pos + shift, and how far they all are
        from it when that is one number (None: each its own)."""
        if rank_drop is not None:
            # array methods, not np.all / np.array_equal: their wrappers cost more than
            # the comparisons of these 90 values
            if (rank_drop == NO_DROP).all() and (shift == self.shift).all():
                return np.empty(0, dtype=np.intp), 0  # no rank moved, nor the shift
            if (rank_drop != NO_DROP).all() and (shift == self.shift + 1).all():
                # Every head dropped one rank: the keys above it moved down with the shift,
                # the ones below it (the sinks) stayed, and turn by the shift's step. One pass
                # over the ranks at most; checking every key cost 3x the memory traffic, on
                # caches cold from the graph.
                return self._below(orig_pos, empty, ranks, rank_drop), 1
        mismatch = np.not_equal(self.key_pos - ranks.settled(), shift[..., None])
        # flat indices: a 3-D nonzero over the whole cache cost twice as much
        return np.flatnonzero(np.logical_and(mismatch, orig_pos != empty, out=mismatch)), None

    def _below(self, orig_pos: np.ndarray, empty: int, ranks: RankOrder,
               rank_drop: np.ndarray) -> np.ndarray:
        """Flat indices of the valid keys ranked below each head's dropped rank."""
        # A head's valid keys hold the ranks 0..n-1 once each, so exactly rank_drop[l, h] of
        # them rank below it: distinct valid keys, as many as that in all, each ranked below
        # its head's drop, are those keys. The last step's (the sinks, usually) are checked so
        # before a pass over every rank looks for them.
        last = self.sinks_turned
        if last is not None and last.size == rank_drop.sum():
            head = last // orig_pos.shape[-1]
            # stored ranks: never below the ranks, so below the drop means the ranks are too
            if (ranks.stored.reshape(-1)[last] < rank_drop.reshape(-1)[head]).all() and (
                    orig_pos.reshape(-1)[last] != empty).all():
                return last
        below = np.flatnonzero(ranks.settled() < rank_drop[..., None])
        self.sinks_turned = below[orig_pos.reshape(-1)[below] != empty]  # empty slots rank 0
        return self.sinks_turned


PIECE = 8192  # keys turned per pass: a re-normalisation turns every key (184,320 at budget 2048)


def _pieces(n: int) -> list[slice]:
    """Slices of at most PIECE keys: temporaries stay a few MB whatever is turned (every key at
    once took ~300 MB of them, RSS that a long stream then kept)."""
    return [slice(i, min(i + PIECE, n)) for i in range(0, n, PIECE)]


def _part(delta: np.ndarray | int, piece: slice) -> np.ndarray | int:
    return delta if isinstance(delta, int) else delta[piece]


def _one_delta(delta: np.ndarray | int) -> np.ndarray | int:
    """`delta` as one int when all its values are equal (a streaming step turns by 1)."""
    if isinstance(delta, int):
        return delta
    delta = np.asarray(delta, dtype=np.int64)
    if delta.size and (delta == delta.flat[0]).all():
        return int(delta.flat[0])
    return delta


def attach(cache: Any, manifest: Any, position_mode: str) -> None:
    """Give `cache` (a KVCache) the rotation a `key_rope` "cached" bundle needs; else nothing."""
    if manifest.key_rope == "cached":
        d = manifest.dims
        cache.rotation = KeyRotation.allocate(
            cache.orig_pos.shape, d.rope_inv_freq, d.rope_attention_scaling, manifest.rope_table,
            by_rank=position_mode == "cache", per_layer=manifest.attention == "gqa")
