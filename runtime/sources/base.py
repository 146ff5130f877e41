"""What every source gives the run loop: frames (RGB uint8 arrays with an index and a time), and
three kinds of failure the loop treats differently.

- `SourceError`: the source cannot be opened or used at all (bad spec, missing file): stop.
- `SourceDropped`: a live source (camera, RTSP) lost its stream: reopen it with backoff.
- `FrameError`: one frame is unreadable (a corrupt image): skip it with a warning.
A source that simply ends (a file) returns None from `read`. A live source's None is a drop
(it is reopened), unless the source has `ends = True`: its end is real (synthetic `frames=N`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgekv.runtime.errors import EdgeKVError


class SourceError(EdgeKVError):
    """A source that cannot be opened or read at all."""


class SourceDropped(Exception):  # noqa: N818 - an event the loop recovers from, not a bug
    """A live source lost its stream; reopening may bring it back."""


class FrameError(Exception):
    """One frame that cannot be decoded or has the wrong shape; the next one may be fine."""


@dataclass
class Frame:
    image: np.ndarray  # [H, W, 3] uint8, RGB
    index: int  # the source's own frame counter (counts frames the source produced)
    t: float  # seconds: media time for files and synthetic, wall time since open for live


class Source(Protocol):
    name: str  # for logs: never holds credentials
    live: bool  # True: frames arrive in real time and old ones are worth nothing (camera, RTSP)

    def open(self) -> None: ...

    def read(self) -> Frame | None:
        """The next frame; None at the end. Raises FrameError or SourceDropped."""
        ...

    def close(self) -> None: ...


def check_frame(image: object) -> np.ndarray:
    """The frame as a contiguous [H, W, 3] uint8 array, or FrameError saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise FrameError(f"frame is {type(image).__name__}, not an array")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise FrameError(f"frame has shape {image.shape}, expected (H, W, 3)")
    if image.dtype != np.uint8:
        raise FrameError(f"frame has dtype {image.dtype}, expected uint8")
    return np.ascontiguousarray(image)
