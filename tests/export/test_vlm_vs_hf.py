"""Every multimodal bundle matches the HF model it came from: image + text logits, and greedy
answers after three frames, with the vision graph in ONNX Runtime and either decoder backend."""

import numpy as np
import pytest
import torch
import vlm_fixtures
from vlm_fixtures import FAMILIES, PICTURE

from edgekv.export.loading import resolve
from edgekv.export.validate_vlm import bundle_logits, hf_inputs, hf_logits, messages
from edgekv.export.vlm_loading import load_vision_language
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.session import Session

TOL = 1e-3
QUESTION = "Which of these frames is the brightest?"


def pictures(family: str, n: int) -> list:
    h, w = PICTURE[family]
    return [vlm_fixtures.image(h, w, seed=i + 1) for i in range(n)]


# Each test runs HF once and both decoder backends against it (the vision graph is ORT's).
BACKENDS = ["ort", "torch"]


@pytest.mark.parametrize("family", FAMILIES)
def test_image_and_text_logits_match_hf(family, vlm_dir, vlm_bundle):
    bundle = vlm_bundle(family)
    vlm = load_vision_language(resolve(str(vlm_dir(family))))
    images = pictures(family, 1)
    chat = messages(1)
    ref = hf_logits(vlm.model, hf_inputs(vlm, Bundle.open(bundle).manifest.vision, chat, images))
    for backend in BACKENDS:
        ours = bundle_logits(bundle, chat, images, backend=backend)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= TOL, backend


@pytest.mark.parametrize("family", FAMILIES)
def test_three_frames_then_question_answers_like_hf_generate(family, vlm_dir, vlm_bundle):
    bundle = Bundle.open(vlm_bundle(family))
    vlm = load_vision_language(resolve(str(vlm_dir(family))))
    frames = pictures(family, 3)
    inputs = hf_inputs(vlm, bundle.manifest.vision, messages(3, QUESTION), frames)
    with torch.inference_mode():
        out = vlm.model.generate(**inputs, max_new_tokens=20, do_sample=False)
    expected = out[0, inputs["input_ids"].shape[1] :].tolist()
    assert len(set(expected)) > 3, "the tiny model should not repeat one token"
    for backend in BACKENDS:
        check_answer(bundle, backend, frames, inputs["input_ids"].shape[1], expected)


def check_answer(bundle, backend, frames, prompt_tokens, expected):
    session = Session.open(bundle, policy="full", backend=backend)
    for frame in frames:
        session.append_image(frame)
    produced = record_tokens(session)
    "".join(session.ask(QUESTION, max_new_tokens=20))
    # Same prompt length as HF (every generated token is fed back as well).
    assert session.stats.tokens_in == prompt_tokens + len(produced), backend
    assert produced == expected, backend
    # The images sit in the cache as image tokens, one group per frame.
    image_groups = set(session.cache.group[0, 0][session.cache.modality[0, 0] == 1].tolist())
    assert image_groups == {1, 2, 3}


def record_tokens(session: Session) -> list[int]:
    """Collect the token ids `session.generate` yields (ask streams text)."""
    produced: list[int] = []
    original = session.generate

    def recording(*args, **kwargs):
        for token in original(*args, **kwargs):
            produced.append(token)
            yield token

    session.generate = recording
    return produced
