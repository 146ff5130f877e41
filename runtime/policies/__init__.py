"""Policy registry: one file per policy, one line per policy in `POLICIES`.

`make_policy("streaming:sinks=8")` builds a policy from the CLI's `name:key=value,...` form;
`make_policy("structured+h2o:recent=0.25")` two of them, one for prompts and frames, one for
answers (`composed.py`).
"""

from __future__ import annotations

import dataclasses
import math

from edgekv.runtime.errors import PolicyError
from edgekv.runtime.policies.base import Policy
from edgekv.runtime.policies.composed import Composed
from edgekv.runtime.policies.full import Full
from edgekv.runtime.policies.h2o import H2O
from edgekv.runtime.policies.inf_mllm import InfMLLM
from edgekv.runtime.policies.snapkv import SnapKV
from edgekv.runtime.policies.streaming import Streaming
from edgekv.runtime.policies.structured import Structured
from edgekv.runtime.policies.window import Window

POLICIES: dict[str, type[Policy]] = {
    Full.name: Full,
    Window.name: Window,
    Streaming.name: Streaming,
    H2O.name: H2O,
    SnapKV.name: SnapKV,
    InfMLLM.name: InfMLLM,
    Structured.name: Structured,
}


def make_policy(spec: str) -> Policy:
    """Parse `name`, `name:key=value,key=value`, or two of them joined by `+` (the first for
    chunks fed in, the second for generated tokens) into a policy instance."""
    if "+" in spec:
        parts = spec.split("+")
        if len(parts) != 2 or not all(parts):
            raise PolicyError(f"bad policy {spec!r}: compose exactly two, as PREFILL+DECODE "
                              "(e.g. structured+h2o)")
        return Composed(_one(parts[0]), _one(parts[1]))
    return _one(spec)


def _one(spec: str) -> Policy:
    name, _, args = spec.partition(":")
    if name not in POLICIES:
        raise PolicyError(f"unknown policy {name!r}; known policies: {', '.join(POLICIES)}")
    cls = POLICIES[name]
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, object] = {}
    for item in filter(None, args.split(",")):
        key, eq, raw = item.partition("=")
        if not eq or key not in known:
            raise PolicyError(
                f"bad parameter {item!r} for policy {name!r}; its parameters: "
                f"{', '.join(known) or 'none'}"
            )
        if key in kwargs:
            raise PolicyError(f"{name}: {key} is given twice")
        kwargs[key] = value = _convert(raw, type(getattr(cls(), key)), name, key)
        low, high = cls.ranges.get(key, (-math.inf, math.inf))
        if not low <= value <= high:  # NaN too
            raise PolicyError(f"{name}: {key}={raw} is outside {low:g}..{high:g}")
        if key in cls.odd and value % 2 == 0:
            raise PolicyError(f"{name}: {key}={raw} must be odd (a window centred on each "
                              f"token): {value - 1} or {value + 1}")
    return cls(**kwargs)


def _convert(raw: str, kind: type, policy: str, key: str) -> object:
    try:
        if kind is bool:
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        return kind(raw)
    except ValueError as exc:
        raise PolicyError(f"{policy}: {key}={raw!r} is not a valid {kind.__name__}") from exc
