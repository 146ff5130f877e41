"""Compare a bundle with the HF model it came from: same tokens in, max |logit difference| out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekv.runtime.bundle import Bundle
from edgekv.runtime.session import Session


def hf_logits(model: Any, ids: list[int]) -> np.ndarray:
    """HF forward over the whole sequence at once: [n, V] float32."""
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def bundle_logits(bundle_dir: str | Path, ids: list[int], backend: str = "ort") -> np.ndarray:
    """The bundle's logits for `ids`, fed chunk by chunk with the `full` policy: [n, V]."""
    bundle = Bundle.open(bundle_dir)
    session = Session.open(bundle, policy="full", backend=backend)
    parts: list[np.ndarray] = []
    session.feed(ids, on_chunk=lambda _offset, logits: parts.append(logits.copy()))
    return np.concatenate(parts)


def compare(bundle_dir: str | Path, model: Any, ids: list[int], backend: str = "ort") -> float:
    return float(np.abs(bundle_logits(bundle_dir, ids, backend) - hf_logits(model, ids)).max())
