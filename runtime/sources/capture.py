"""An OpenCV `VideoCapture` as a source: the shared part of camera, GStreamer, RTSP and video
files. OpenCV gives BGR; frames leave here RGB."""

from __future__ import annotations

import os
import time
from typing import Any

from edgekv.runtime.sources.base import Frame, FrameError, SourceDropped, SourceError, check_frame


def quiet_native_logs() -> None:
    """OpenCV's warnings (which backend it tried) and FFmpeg's lines ("moov atom not found",
    "Connection to tcp://... failed") only repeat what our one error line says, and FFmpeg's
    bypass `redact`. FFmpeg reads its level once, at its first use in the process, so this
    runs when this module is imported. Set either variable to see them again."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


_USER_LOG_LEVEL = "OPENCV_LOG_LEVEL" in os.environ
_USER_FFMPEG_LEVEL = "OPENCV_FFMPEG_LOGLEVEL" in os.environ


def _reason_hint() -> str:
    """OpenCV says only that it failed; the reason (refused, 401, no such stream) is FFmpeg's,
    which quiet_native_logs silenced unless the user set its level."""
    if _USER_FFMPEG_LEVEL:
        return ""
    return " (OpenCV gives no reason; OPENCV_FFMPEG_LOGLEVEL=16 shows FFmpeg's)"
quiet_native_logs()


def import_cv2() -> Any:
    quiet_native_logs()
    try:
        import cv2
    except ImportError as exc:
        raise SourceError("video sources need OpenCV: pip install 'edgekv[video]' "
                          "(on a Jetson, JetPack's python3-opencv, which has GStreamer)") from exc
    if not _USER_LOG_LEVEL:  # the variable is read at import: cv2 may have come in before us
        logging = getattr(getattr(cv2, "utils", None), "logging", None)
        if logging is not None:
            logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    return cv2


# A file whose reads keep failing is treated as ended: a truncated file can announce far more
# frames than it holds, and each would otherwise be "skipped" in turn.
_MAX_BAD_IN_A_ROW = 25


class CaptureSource:
    """Subclasses say what to open (`target`, `api`) and whether the stream is live.

    Live: a failed read means the stream dropped (SourceDropped, the caller reopens); frame
    times are wall seconds since open. File: a failed read is the end, unless frames remain
    (then that frame was corrupt: FrameError); frame times are the file's own timestamps.
    """

    name = "capture"
    live = True
    # FFmpeg network streams: a server that never answers fails (then is retried) instead of
    # hanging the run. None: the backend's defaults (other backends may not take these).
    timeouts_s: tuple[float, float] | None = None

    def __init__(self) -> None:
        self.cap: Any = None
        self.index = 0
        self.t0 = 0.0
        self.frame_count = 0  # files: frames the container announces (0 if unknown)
        self.failures = 0  # failed reads in a row

    def target(self) -> tuple[Any, int]:
        """(what VideoCapture opens, the cv2.CAP_* backend)."""
        raise NotImplementedError

    def open(self) -> None:
        cv2 = import_cv2()
        target, api = self.target()
        params = []
        if self.timeouts_s is not None:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.timeouts_s[0] * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.timeouts_s[1] * 1000)]
        cap = cv2.VideoCapture(target, api, params)
        if not cap.isOpened():
            cap.release()
            raise (SourceDropped if self.live else SourceError)(f"cannot open {self.name}"
                                                                + _reason_hint())
        self.cap, self.t0 = cap, time.monotonic()
        self.frame_count = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)

    def read(self) -> Frame | None:
        if self.cap is None:
            raise SourceDropped(f"{self.name} is not open")
        cv2 = import_cv2()
        ok, bgr = self.cap.read()
        index = self.index
        self.index += 1
        if not ok or bgr is None:
            if self.live:
                raise SourceDropped(f"{self.name} returned no frame")
            self.failures += 1
            if self.frame_count and index < self.frame_count - 1 and \
                    self.failures <= _MAX_BAD_IN_A_ROW:
                raise FrameError(f"frame {index} could not be decoded")
            return None  # the end (or a truncated file whose header promised more frames)
        self.failures = 0
        if bgr.ndim == 2:  # a grey camera
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        rgb = check_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if self.live:
            t = time.monotonic() - self.t0
        else:
            t = self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        return Frame(rgb, index, t)

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None
