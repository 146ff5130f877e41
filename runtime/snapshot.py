"""A session's state saved and put back: ask a question, then continue the stream as if it had
not been asked (the needle benchmark asks at several distances from one stream).

The cache is restored in place, never replaced: backends bind its arrays once (ORT's IOBinding
holds OrtValues over them), so the same buffers must hold the old contents again. Backends
that keep K/V on a device (trt, ort-gpu, torch-device) are not covered: host state only.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

SESSION_FIELDS = ("pos", "messages", "_fed_text", "mrope_next", "images_seen")


@dataclass
class Snapshot:
    cache: dict[str, Any]
    policy: Any
    session: dict[str, Any]

    @classmethod
    def take(cls, session: Any) -> Snapshot:
        cache = {f.name: copy.deepcopy(getattr(session.cache, f.name))
                 for f in dataclasses.fields(session.cache) if f.metadata.get("snapshot", True)}
        return cls(cache, copy.deepcopy(session.policy),
                   {name: copy.deepcopy(getattr(session, name)) for name in SESSION_FIELDS})

    def restore(self, session: Any) -> None:
        for name, saved in self.cache.items():
            current = getattr(session.cache, name)
            if isinstance(current, np.ndarray) and isinstance(saved, np.ndarray):
                np.copyto(current, saved)
            elif dataclasses.is_dataclass(current):  # M-RoPE slots, key rotation: arrays inside
                for f in dataclasses.fields(current):
                    now, then = getattr(current, f.name), getattr(saved, f.name)
                    if isinstance(now, np.ndarray) and getattr(then, "shape", None) == now.shape:
                        np.copyto(now, then)
                    else:  # memos of other shapes, or None on one side
                        setattr(current, f.name, copy.deepcopy(then))
            else:  # plain values, and arrays that are None on one side (nothing binds them)
                setattr(session.cache, name, copy.deepcopy(saved))
        session.policy = copy.deepcopy(self.policy)
        for name, value in self.session.items():
            setattr(session, name, copy.deepcopy(value))
