"""A session: the cache, a policy and a backend, fed chunk by chunk under a fixed budget.

Order of one step (DESIGN.md): the policy frees room for the chunk, the graph runs with the
post-eviction cache, the policy observes the attention, then the chunk's K/V are written.
Chat turns and pictures (`ask`, `add_system`, `append_image`) are in conversation.py.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekv.runtime import key_rotation, mrope
from edgekv.runtime.backends import Backend, make_backend
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.cache import TEXT, KVCache
from edgekv.runtime.conversation import Conversation
from edgekv.runtime.errors import BudgetError, BundleError, SettingError, whole_number
from edgekv.runtime.kv_codec import KVCodec
from edgekv.runtime.policies import Policy, make_policy
from edgekv.runtime.policies.base import Chunk
from edgekv.runtime.sampler import Sampler

ChunkCallback = Callable[[int, np.ndarray], None]
# Backends over the host cache, where runtime/key_rotation.py re-rotates keys in place.
ROTATED_KEY_BACKENDS = ("ort", "torch")


@dataclass
class Stats:
    steps: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    graph_s: float = 0.0  # time inside the decoder graph
    step_s: float = 0.0  # whole steps: policy + bookkeeping + graph


@dataclass
class Session(Conversation):
    bundle: Bundle
    policy: Policy
    backend: Backend
    cache: KVCache
    position_mode: str
    chunk: int
    pos: int = 0  # stream position of the next token
    stats: Stats = field(default_factory=Stats)
    messages: list[dict[str, Any]] = field(default_factory=list)
    _fed_text: str = ""
    mrope_next: int = 0  # M-RoPE bundles: absolute position of the next new segment
    images_seen: int = 0
    _vision: Any = field(default=None, repr=False)
    # An answer generator is between its question and its end: nothing else may be fed then.
    _answering: bool = field(default=False, repr=False)

    @classmethod
    def open(
        cls,
        bundle: Bundle,
        policy: Policy | str = "streaming",
        backend: str = "auto",
        budget: int | None = None,
        position_mode: str | None = None,
        threads: int = 0,
        say: Callable[[str], None] | None = None,
    ) -> Session:
        m = bundle.manifest
        if not whole_number(threads) or threads < 0:
            raise SettingError(f"--threads must be 0 (all cores) or more, not {threads!r}")
        policy = make_policy(policy) if isinstance(policy, str) else policy
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a Policy or a spec string such as 'streaming', "
                            f"not {type(policy).__name__}")
        budget = m.budget if budget is None else budget
        if not whole_number(budget):
            raise TypeError(f"budget must be a whole number of slots, not {budget!r}")
        check_policy(m, policy, budget)
        d = m.dims
        cache = KVCache.allocate(d.num_layers, d.num_kv_heads, m.budget, d.head_dim,
                                 bundle.cache_dtype, budget=budget,
                                 mrope=m.position_scheme == "mrope", scratch_rows=m.scratch_rows)
        cache.codec = KVCodec.from_manifest(m)
        position_mode = position_mode or m.position_mode
        key_rotation.attach(cache, m, position_mode)
        chosen = make_backend(backend, bundle, cache, threads, say)
        if m.kv_quant and chosen.name != "ort":
            raise BundleError(
                f"this bundle's KV cache is {m.kv_quant} (GroupQueryAttention reads it), which "
                f"the {chosen.name} backend does not run; use --backend ort")
        if m.key_rope == "cached" and chosen.name not in ROTATED_KEY_BACKENDS:
            raise BundleError(
                f"this bundle caches keys rotated (key_rope 'cached'), which the {chosen.name} "
                f"backend does not keep; use --backend {' or '.join(ROTATED_KEY_BACKENDS)}, or "
                "re-export with --key-rope graph")
        if m.key_rope == "cached" and position_mode == "cache" and not policy.oldest_first:
            warnings.warn(
                f"policy {policy.name!r} evicts from the middle of the cache: with keys cached "
                "rotated (this bundle) every key older than an evicted one is turned again at "
                "each step (SmolLM2, budget 2048: ~50 ms per decode step); export with "
                "--key-rope graph for scored policies", stacklevel=2)
        return cls(bundle, policy, chosen, cache, position_mode, m.chunk)

    # -- feeding --------------------------------------------------------------------------------
    def step(
        self,
        embeds: np.ndarray,
        modality: int = TEXT,
        protected: bool = False,
        group: int = 0,
        place: np.ndarray | None = None,
        mrope_pos: tuple[np.ndarray, np.ndarray] | None = None,
        last_only: bool = False,
    ) -> np.ndarray:
        """One decoder call on a chunk of embeddings [1, c, H]; returns its logits [c, V].

        M-RoPE bundles take the chunk's (positions [3, c], extents [c]) in `mrope_pos`; text
        positions when it is None. `last_only`: only the last row is needed; the result is
        then [1, V] or [c, V] (whatever the backend's graph can skip), its last row the one.
        """
        start = time.perf_counter()
        embeds = self._checked_embeds(embeds)  # before make_room: a refused chunk evicts nothing
        c = embeds.shape[1]
        positions = np.arange(self.pos, self.pos + c, dtype=np.int64)
        self.policy.make_room(self.cache, c)
        if self.cache.mrope is None:
            # rotated-key caches: slot_pos is the graph's pos_shift, keys turned
            slot_pos, slot_bias, chunk_pos = self.cache.graph_inputs(positions, self.position_mode)
            self._check_rope_table(chunk_pos)
        else:
            mpos, extent = mrope_pos or mrope.text_positions(self.mrope_next, c)
            slot_pos, slot_bias, chunk_pos = mrope.graph_inputs(self.cache, mpos, self.mrope_next,
                                                                self.position_mode)
        graph_start = time.perf_counter()
        out = self.backend.run(embeds, chunk_pos, slot_pos, slot_bias, self.policy.mass_weight(c),
                               last_only=last_only)
        self.stats.graph_s += time.perf_counter() - graph_start
        capacity = self.cache.capacity
        self.policy.observe(self.cache, out.attn_mass[..., :capacity])
        self.policy.admit(self.cache, Chunk(out.new_keys, out.new_values, positions,
                                            out.attn_mass[..., capacity:], modality, group,
                                            protected, place, out.rotated_keys,
                                            out.rotated_pos, out.stored_values))
        if self.cache.mrope is not None:
            self.cache.mrope.record(self.cache.orig_pos, positions, mpos, extent)
            self.mrope_next = max(self.mrope_next, int((mpos[0] + extent).max()))
        self.pos += c
        self.stats.steps += 1
        self.stats.tokens_in += c
        self.stats.step_s += time.perf_counter() - start
        return out.logits[0]

    def _checked_embeds(self, embeds: Any) -> np.ndarray:
        """`embeds` as the graph takes them ([1, c, H], 1 <= c <= chunk, the embedding table's
        dtype), or a TypeError / ValueError naming what is wrong. Floats of another width are
        converted; the graph would refuse them only after the policy had made room."""
        table = self.bundle.embedding
        if not isinstance(embeds, np.ndarray) or not np.issubdtype(embeds.dtype, np.floating):
            what = embeds.dtype if isinstance(embeds, np.ndarray) else type(embeds).__name__
            raise TypeError(f"embeddings must be a float numpy array (Bundle.embed), not {what}")
        hidden = table.shape[1]
        if embeds.ndim != 3 or embeds.shape[0] != 1 or embeds.shape[2] != hidden \
                or not 1 <= embeds.shape[1] <= self.chunk:
            raise ValueError(f"embeddings must be [1, c, {hidden}] with c from 1 to the bundle's "
                             f"chunk {self.chunk} (Session.feed splits longer input), not "
                             f"{list(embeds.shape)}")
        _refuse_non_finite(embeds)
        return embeds.astype(table.dtype, copy=False)

    def _check_rope_table(self, chunk_pos: np.ndarray) -> None:
        table = self.bundle.manifest.rope_table
        if table and int(chunk_pos[-1]) >= table:
            raise BudgetError(
                f"position {int(chunk_pos[-1])} is beyond this bundle's RoPE table ({table} "
                "positions): use position mode 'cache', or export with --target tensorrt "
                "(positions computed in the graph)"
            )

    def feed(
        self, ids: list[int] | np.ndarray, on_chunk: ChunkCallback | None = None, **meta: Any
    ) -> np.ndarray:
        """Feed tokens in chunks of at most `chunk`; returns the last position's logits [V].

        `on_chunk(offset, logits)` sees every chunk's logits [c, V] (for perplexity).
        """
        self._refuse_while_answering()
        ids = self._checked_ids(ids)  # all of them first: a bad id in chunk 3 feeds no chunk
        logits = None
        for offset in range(0, len(ids), self.chunk):
            part = ids[offset : offset + self.chunk]
            logits = self.step(self.bundle.embed(part), last_only=on_chunk is None, **meta)
            if on_chunk is not None:
                on_chunk(offset, logits)
        return logits[-1].copy()

    def _checked_ids(self, ids: Any) -> np.ndarray:
        """`ids` as int64 token ids [n], or a TypeError / ValueError: float ids would be cut
        to integers and negative ones would index the table from its end, both silently."""
        arr = np.asarray(ids)
        if arr.size == 0:
            raise ValueError("nothing to feed")
        if arr.ndim != 1:
            raise ValueError(f"token ids must be a 1-D sequence, not shape {list(arr.shape)}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"token ids must be integers, not {arr.dtype}")
        vocab = len(self.bundle.embedding)
        bad = (arr < 0) | (arr >= vocab)
        if bad.any():
            raise ValueError(f"token id {int(arr[bad][0])} is outside the vocabulary "
                             f"(0 to {vocab - 1})")
        return arr.astype(np.int64, copy=False)

    def generate(
        self,
        last_logits: np.ndarray,
        max_new_tokens: int = 256,
        sampler: Sampler | None = None,
        stop: tuple[str, ...] = (),
    ) -> Iterator[int]:
        """Yield new token ids, feeding each back; stops at EOS, a stop string or the limit."""
        sampler = sampler or Sampler()
        eos = self.bundle.text.eos_ids
        produced: list[int] = []
        logits = last_logits
        for _ in range(max_new_tokens):
            token = sampler(logits)
            produced.append(token)
            self.stats.tokens_out += 1
            logits = self.step(self.bundle.embed(np.array([token])), last_only=True)[-1]
            yield token
            if token in eos:
                return
            if stop and any(s in self.bundle.text.decode(produced[-16:]) for s in stop):
                return

    def _refuse_while_answering(self) -> None:
        if self._answering:
            raise SettingError("an answer is still being streamed: read it to the end or close "
                               "it (pieces.close()) before feeding or asking anything else")

    def room(self) -> int:
        """Slots one turn or picture can have: the budget less what the policy keeps apart
        (streaming's sinks) and the most any head holds protected (a system message)."""
        return (self.cache.budget - self.policy.min_budget(0)
                - int(self.cache.protected.sum(-1).max()))

    def feed_prompt(
        self, text: str, images: list[Any] = (), on_chunk: ChunkCallback | None = None
    ) -> np.ndarray:
        """Feed rendered template text whose image placeholders stand for `images`, in order;
        returns the last position's logits [V]."""
        from edgekv.runtime.image_prompt import build

        prompt = build(self.bundle, self._vision_encoder() if images else None, text,
                       list(images), self.mrope_next, self.images_seen + 1)
        self.images_seen += len(images)
        return self.feed_embeds(prompt, on_chunk)

    def feed_embeds(self, prompt: Any, on_chunk: ChunkCallback | None = None) -> np.ndarray:
        """Feed an `image_prompt.Prompt`; returns the last position's logits [V].

        Chunks never mix a text run and an image, so a policy sees each image's tokens with one
        modality and group and their grid places (what `structured` compares frame to frame).
        """
        self._refuse_while_answering()
        if len(prompt) == 0:
            raise ValueError("nothing to feed")
        _refuse_non_finite(prompt.embeds)  # all of it first: step would refuse it halfway
        logits = None
        for offset, end in prompt.runs(self.chunk):
            part = slice(offset, end)
            is_image = prompt.modality[offset] != TEXT
            mpos = None
            if prompt.mrope_pos is not None:
                mpos = (prompt.mrope_pos[:, part], prompt.mrope_extent[part])
            logits = self.step(prompt.embeds[:, part], modality=int(prompt.modality[offset]),
                               group=int(prompt.group[offset]),
                               place=prompt.place[part] if is_image else None, mrope_pos=mpos,
                               last_only=on_chunk is None)
            if on_chunk is not None:
                on_chunk(offset, logits)
        return logits[-1].copy()

    def _vision_encoder(self) -> Any:
        if self._vision is None:
            from edgekv.runtime.vision import VisionEncoder

            self._vision = VisionEncoder.open(self.bundle.path, self.bundle.manifest.vision,
                                              self.bundle.kv_dtype)
        return self._vision

def check_policy(manifest: Any, policy: Policy, budget: int, flag: str = "--budget") -> None:
    """Whether a session of `policy` at `budget` can run on the bundle, before any cache
    exists: its budget fits, and the bundle gives the attention mass the policy reads."""
    if budget > manifest.budget:
        raise BudgetError(
            f"{flag} {budget} exceeds the bundle's budget {manifest.budget}; a bundle's budget "
            "can be lowered at run time, not raised (re-export with a larger --budget)")
    policy.check_budget(budget, manifest.chunk)
    # gqa bundles without the mass read one slot bias for every head (Policy.same_slots)
    needs_head_bias = manifest.attention == "gqa" and not policy.same_slots
    if not manifest.attn_mass and (policy.reads_mass or needs_head_bias):
        why = ("scores slots by attention" if policy.reads_mass
               else "keeps different slots in different heads")
        raise BundleError(
            f"policy {policy.name!r} {why}, and this bundle was exported with "
            "--no-attn-mass; use streaming, window or full, or re-export without it")


def _refuse_non_finite(embeds: np.ndarray) -> None:
    """A NaN or inf written into the cache stays there: every later step would attend to it."""
    if not np.isfinite(embeds).all():
        raise ValueError("embeddings hold NaN or inf (a vision encoder or caller's bug); "
                         "nothing was fed")
