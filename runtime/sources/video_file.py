"""A video file (anything OpenCV's FFmpeg reads). It ends, and then the run ends cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekv.runtime.sources.base import SourceError
from edgekv.runtime.sources.capture import CaptureSource, import_cv2


class VideoFileSource(CaptureSource):
    live = False

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.name = str(path)

    def target(self) -> tuple[Any, int]:
        return str(self.path), import_cv2().CAP_FFMPEG


def open_video_file(arg: str) -> VideoFileSource:
    path = Path(arg)
    if not path.is_file():
        raise SourceError(f"no such video file: {arg}")
    return VideoFileSource(path)
