"""The ONNX Runtime fast paths (per-layer cache inputs, `logit_rows`) give the same numbers as
the original contract, and bundles without them still run."""

import numpy as np
import pytest

from edgekv.export.manifest import LOGIT_ROWS
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.session import Session


def _two_steps(bundle: Bundle, last_only: bool) -> list[np.ndarray]:
    session = Session.open(bundle, policy="full", backend="ort")
    ids = np.arange(5, 45)
    first = session.step(bundle.embed(ids[:32]), last_only=last_only).copy()
    second = session.step(bundle.embed(ids[32:]), last_only=last_only).copy()
    return [first, second]


@pytest.mark.parametrize("target", ["ort", "tensorrt"])
def test_last_only_is_the_last_row_of_the_full_logits(target, tiny_bundle):
    bundle = Bundle.open(tiny_bundle("llama", budget=320, chunk=32, target=target))
    m = bundle.manifest
    fast = target == "ort"
    assert (m.kv_layout == "per_layer") == fast
    assert (LOGIT_ROWS in m.inputs) == fast
    full, last = _two_steps(bundle, False), _two_steps(bundle, True)
    for f, lo in zip(full, last, strict=True):
        assert lo.shape == ((1,) if fast else f.shape[:1]) + f.shape[1:]
        # the second step also proves the K/V written after a last-only step are the same
        assert np.abs(lo[-1] - f[-1]).max() <= 1e-5


def test_per_layer_names_follow_the_manifest(tiny_bundle):
    m = Bundle.open(tiny_bundle("llama", budget=320, chunk=32)).manifest
    keys = m.kv_input_names("past_keys")
    assert keys == [f"past_keys.{i}" for i in range(m.dims.num_layers)]
