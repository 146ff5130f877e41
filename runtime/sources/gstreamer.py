"""`gst:PIPELINE`: a GStreamer pipeline ending in appsink, e.g. a Jetson CSI camera:
gst:nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 !
nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1

It needs an OpenCV built with GStreamer (JetPack's is; the PyPI wheels are not)."""

from __future__ import annotations

from typing import Any

from edgekv.runtime.sources.base import SourceError
from edgekv.runtime.sources.capture import CaptureSource, import_cv2


def has_gstreamer() -> bool:
    cv2 = import_cv2()
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


class GStreamerSource(CaptureSource):
    live = True

    def __init__(self, pipeline: str) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.name = f"gst:{pipeline.split('!')[0].strip()}"

    def target(self) -> tuple[Any, int]:
        return self.pipeline, import_cv2().CAP_GSTREAMER

    def open(self) -> None:
        if not has_gstreamer():  # otherwise OpenCV fails silently and we would retry forever
            raise SourceError("this OpenCV has no GStreamer support; on a Jetson use JetPack's "
                              "python3-opencv instead of the opencv-python-headless wheel")
        super().open()


def open_gstreamer(arg: str) -> GStreamerSource:
    if "appsink" not in arg:
        raise SourceError("gst:PIPELINE must end in appsink (OpenCV reads frames from it)")
    return GStreamerSource(arg)
