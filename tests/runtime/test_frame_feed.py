"""StreamingFeeder feeds frames exactly as Session.append_image does (same cache, same answers)
while the conversation text stays the size of one frame, on tiny random VLM bundles."""

from __future__ import annotations

import numpy as np
import pytest

from edgekv.runtime.bundle import Bundle
from edgekv.runtime.frame_feed import StreamingFeeder, image_gap
from edgekv.runtime.session import Session
from edgekv.runtime.sources import open_source
from edgekv.runtime.sources.frames import FrameStream, StreamLimits

FRAMES = 7


def frames(n: int) -> list[np.ndarray]:
    return [f.image for f in FrameStream(open_source("synthetic:size=48x40"),
                                         StreamLimits(max_frames=n))]


def watch(bundle_dir, streaming: bool, pictures: list[np.ndarray]):
    session = Session.open(Bundle.open(bundle_dir), policy="streaming", budget=512)
    session.messages.append({"role": "system", "content": session.message_content("Watch.")})
    target = StreamingFeeder(session) if streaming else session
    answers = []
    for i, picture in enumerate(pictures, 1):
        target.append_image(picture)
        if i == 4:
            answers.append("".join(target.ask("What moved?", 4)))
    answers.append("".join(target.ask("And now?", 4)))
    return session, answers


@pytest.mark.parametrize("family", ["llava-clip", "qwen2_vl", "idefics3"])
def test_streaming_feed_equals_append_image(vlm_bundle, family):
    pictures = frames(FRAMES)
    plain, plain_answers = watch(vlm_bundle(family), False, pictures)
    fed, fed_answers = watch(vlm_bundle(family), True, pictures)
    assert fed_answers == plain_answers
    assert fed.pos == plain.pos and fed.images_seen == plain.images_seen == FRAMES
    assert np.array_equal(fed.cache.orig_pos, plain.cache.orig_pos)
    assert np.array_equal(fed.cache.keys, plain.cache.keys)
    assert np.array_equal(fed.cache.group, plain.cache.group)


def test_the_open_turn_holds_one_frame_however_many_are_fed(vlm_bundle):
    session = Session.open(Bundle.open(vlm_bundle("llava-clip")), budget=512)
    feeder = StreamingFeeder(session)
    for picture in frames(30):
        feeder.append_image(picture)
    assert len(session.messages) == 1 and len(session.messages[0]["content"]) == 1
    assert session.images_seen == 30 and len(session._fed_text) < 100


def test_image_gap_is_none_for_numbered_pictures():
    def numbered(messages, add_generation_prompt):
        items = messages[0]["content"]
        return "".join(f"Picture {i}: <image>" if item["type"] == "image" else item["text"]
                       for i, item in enumerate(items))

    assert image_gap(numbered) is None
    assert image_gap(lambda m, g: "".join("<image>" if i["type"] == "image" else i["text"]
                                          for i in m[0]["content"])) == "<image>"
