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
    """The file's source, tried once here, so a file that is not a video fails before the
    model loads and says why, not after it as "cannot open"."""
    path = Path(arg)
    if not path.is_file():
        raise SourceError(f"no such video file: {arg}")
    if path.stat().st_size == 0:
        raise SourceError(f"{arg} is empty (0 bytes), not a video")
    import_cv2()  # without OpenCV, that error (how to install it), not "not a video"
    source = VideoFileSource(path)
    try:
        source.open()
    except SourceError:
        raise SourceError(f"{arg} is not a video OpenCV's FFmpeg can read (another kind of "
                          "file, or cut short before its index)") from None
    finally:
        source.close()
    return source
