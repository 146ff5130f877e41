"""`rtsp://[user:password@]host[:port]/path`: an IP camera through OpenCV's FFmpeg backend.

The URL (with its credentials) goes to OpenCV only; the source's name, which logs, the status
line and the transcript show, is redacted."""

from __future__ import annotations

import os
from typing import Any

from edgekv.runtime.sources.capture import CaptureSource, import_cv2
from edgekv.runtime.sources.redact import redact

# TCP: over Wi-Fi, UDP loses packets and FFmpeg then hands over smeared frames.
_FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


class RtspSource(CaptureSource):
    live = True
    timeouts_s = (10.0, 10.0)  # open, read

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self.name = redact(url)

    def target(self) -> tuple[Any, int]:
        os.environ.setdefault(_FFMPEG_OPTIONS, "rtsp_transport;tcp")
        return self._url, import_cv2().CAP_FFMPEG

    def __repr__(self) -> str:  # never the URL itself, even in a traceback
        return f"RtspSource({self.name!r})"


def open_rtsp(url: str) -> RtspSource:
    return RtspSource(url)
