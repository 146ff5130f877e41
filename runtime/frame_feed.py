"""Frames into a session for as long as a stream runs, in constant host memory and time.

`Session.append_image` adds an item to the open user turn and re-renders the conversation to
find what is new: right for a few pictures, but over an hour of video without a question the
turn would hold thousands of items and each frame would render them all. The KV cache already
remembers the frames (under the policy); the text state only has to stay consistent so `ask`
can find what is new. So after the first image of a turn, each frame is fed with the text the
chat template puts between two consecutive images (worked out once), and the turn keeps its
first image only. Templates whose text between images is not constant (numbered pictures)
use `append_image` for every frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

_CUT = "\x00edgekv-frame\x00"


def image_gap(render: Any) -> str | None:
    """The text a chat template writes for each further image of an open user turn, or None if
    it differs from image to image. `render(messages, add_generation_prompt)` is the
    template."""

    def upto(images: int) -> str | None:
        items = [{"type": "image"}] * images + [{"type": "text", "text": _CUT}]
        text = render([{"role": "user", "content": items}], False)
        cut = text.find(_CUT)
        return None if cut < 0 else text[:cut]

    one, two, three = upto(1), upto(2), upto(3)
    if one is None or two is None or three is None or not two.startswith(one):
        return None
    gap = two[len(one):]
    return gap if gap and three == two + gap else None


class StreamingFeeder:
    """A session seen through the interface the run loop needs (stream_run.FrameSession)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        text = session.bundle.text
        # Without a chat template there is no image placeholder to repeat: the full path.
        self.gap = image_gap(text.render) if text.info.chat_template else None

    @property
    def cache(self) -> Any:
        return self.session.cache

    @property
    def stats(self) -> Any:
        return self.session.stats

    def append_image(self, frame: np.ndarray) -> None:
        if self.gap is None or not self._turn_has_only_images():
            self.session.append_image(frame)  # the first image of a turn: the full path
            return
        from edgekv.runtime.preprocess import load_image

        self.session.feed_prompt(self.gap, [load_image(frame)])

    def ask(self, question: str, max_new_tokens: int = 128, sampler: Any = None,
            stop: tuple[str, ...] = ()) -> Iterator[str]:
        return self.session.ask(question, max_new_tokens, sampler, stop)

    def _turn_has_only_images(self) -> bool:
        messages = self.session.messages
        last = messages[-1] if messages else None
        return (last is not None and last["role"] == "user" and isinstance(last["content"], list)
                and bool(last["content"]) and all(i.get("type") == "image"
                                                  for i in last["content"]))
