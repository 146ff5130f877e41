"""The keyword HF transformers' forward takes a KV cache by: `cache` in recent 5.x releases,
`past_key_values` before (5.25 still takes it, with a FutureWarning; 5.40 drops it)."""

from __future__ import annotations

import inspect
from typing import Any


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """{name: cache} for `model(...)`, under the name its forward declares."""
    takes = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in takes else "past_key_values": cache}
