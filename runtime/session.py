"""A session: the cache, a policy and a backend, fed chunk by chunk under a fixed budget.

Order of one step (DESIGN.md): the policy frees room for the chunk, the graph runs with the
post-eviction cache, the policy observes the attention, then the chunk's K/V are written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekv.runtime.backends import Backend, make_backend
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.cache import TEXT, KVCache
from edgekv.runtime.errors import BudgetError
from edgekv.runtime.policies import Policy, make_policy
from edgekv.runtime.policies.base import Chunk
from edgekv.runtime.sampler import Sampler

ChunkCallback = Callable[[int, np.ndarray], None]


@dataclass
class Stats:
    steps: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    graph_s: float = 0.0  # time inside the decoder graph
    step_s: float = 0.0  # whole steps: policy + bookkeeping + graph


@dataclass
class Session:
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
        policy = make_policy(policy) if isinstance(policy, str) else policy
        budget = m.budget if budget is None else budget
        if budget > m.budget:
            raise BudgetError(
                f"--budget {budget} exceeds the bundle's budget {m.budget}; a bundle's budget "
                "can be lowered at run time, not raised (re-export with a larger --budget)"
            )
        policy.check_budget(budget, m.chunk)
        d = m.dims
        cache = KVCache.allocate(d.num_layers, d.num_kv_heads, m.budget, d.head_dim,
                                 bundle.kv_dtype, budget=budget)
        return cls(bundle, policy, make_backend(backend, bundle, cache, threads, say), cache,
                   position_mode or m.position_mode, m.chunk)

    # -- feeding --------------------------------------------------------------------------------
    def step(
        self,
        embeds: np.ndarray,
        modality: int = TEXT,
        protected: bool = False,
        group: int = 0,
        place: np.ndarray | None = None,
    ) -> np.ndarray:
        """One decoder call on a chunk of embeddings [1, c, H]; returns its logits [c, V]."""
        start = time.perf_counter()
        c = embeds.shape[1]
        positions = np.arange(self.pos, self.pos + c, dtype=np.int64)
        self.policy.make_room(self.cache, c)
        slot_pos, slot_bias, chunk_pos = self.cache.graph_inputs(positions, self.position_mode)
        table = self.bundle.manifest.rope_table
        if table and int(chunk_pos[-1]) >= table:
            raise BudgetError(
                f"position {int(chunk_pos[-1])} is beyond this bundle's RoPE table ({table} "
                "positions): use position mode 'cache', or export with --target tensorrt "
                "(positions computed in the graph)"
            )
        graph_start = time.perf_counter()
        out = self.backend.run(embeds, chunk_pos, slot_pos, slot_bias, self.policy.mass_weight(c))
        self.stats.graph_s += time.perf_counter() - graph_start
        capacity = self.cache.capacity
        self.policy.observe(self.cache, out.attn_mass[..., :capacity])
        self.policy.admit(self.cache, Chunk(out.new_keys, out.new_values, positions,
                                            out.attn_mass[..., capacity:], modality, group,
                                            protected, place))
        self.pos += c
        self.stats.steps += 1
        self.stats.tokens_in += c
        self.stats.step_s += time.perf_counter() - start
        return out.logits[0]

    def feed(
        self, ids: list[int] | np.ndarray, on_chunk: ChunkCallback | None = None, **meta: Any
    ) -> np.ndarray:
        """Feed tokens in chunks of at most `chunk`; returns the last position's logits [V].

        `on_chunk(offset, logits)` sees every chunk's logits [c, V] (for perplexity).
        """
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            raise ValueError("nothing to feed")
        logits = None
        for offset in range(0, len(ids), self.chunk):
            part = ids[offset : offset + self.chunk]
            logits = self.step(self.bundle.embed(part), **meta)
            if on_chunk is not None:
                on_chunk(offset, logits)
        return logits[-1].copy()

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
            logits = self.step(self.bundle.embed(np.array([token])))[-1]
            yield token
            if token in eos:
                return
            if stop and any(s in self.bundle.text.decode(produced[-16:]) for s in stop):
                return

    # -- chat -----------------------------------------------------------------------------------
    def ask(
        self, question: str, max_new_tokens: int = 256, sampler: Sampler | None = None
    ) -> Iterator[str]:
        """Add a user turn, stream the answer as text pieces, and keep it in the conversation.

        Only the system message and the last exchange are kept as text: the template renders
        them to find what is new, and the cache (under the policy) is the conversation's
        memory. So hundreds of turns cost no more host memory than one.
        """
        text = self.bundle.text
        system = [m for m in self.messages[:1] if m["role"] == "system"]
        user = {"role": "user", "content": question}
        rendered = text.render([*self.messages, user], add_generation_prompt=True)
        common = _common_prefix(rendered, self._fed_text)
        last = self.feed(text.encode(rendered[common:]))
        produced: list[int] = []
        shown = ""
        for token in self.generate(last, max_new_tokens, sampler):
            produced.append(token)
            now = text.decode(produced)
            if now.startswith(shown) and not now.endswith("\ufffd"):
                yield now[len(shown) :]
                shown = now
        self.messages = [*system, user, {"role": "assistant", "content": text.decode(produced)}]
        self._fed_text = (text.render([*system, user], add_generation_prompt=True)
                          + text.decode(produced, skip_special_tokens=False))


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
