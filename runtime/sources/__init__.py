"""Frame sources behind one registry: `open_source(spec)` picks the source from the spec.

    camera:N            a V4L2 camera (camera.py)
    gst:PIPELINE        a GStreamer pipeline ending in appsink (gstreamer.py)
    rtsp://...          an RTSP stream, credentials allowed in the URL (rtsp.py)
    synthetic[:k=v,..]  a generated scene (synthetic.py)
    DIR                 a folder of images, natural order (image_folder.py)
    FILE                a video file (video_file.py)
    env:NAME            the spec is in $NAME (keeps an RTSP password out of `ps` and shell history)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from edgekv.runtime.sources.base import (
    Frame,
    FrameError,
    Source,
    SourceDropped,
    SourceError,
    check_frame,
)
from edgekv.runtime.sources.camera import open_camera
from edgekv.runtime.sources.gstreamer import open_gstreamer
from edgekv.runtime.sources.image_folder import open_image_folder
from edgekv.runtime.sources.redact import redact
from edgekv.runtime.sources.rtsp import open_rtsp
from edgekv.runtime.sources.synthetic import open_synthetic
from edgekv.runtime.sources.video_file import open_video_file

Opener = Callable[[str], Source]

# prefix -> opener of the rest of the spec. URL schemes keep the whole spec (the URL).
SOURCES: dict[str, Opener] = {
    "camera": open_camera,
    "gst": open_gstreamer,
    "synthetic": open_synthetic,
}
URL_SOURCES: dict[str, Opener] = {"rtsp": open_rtsp, "rtsps": open_rtsp}

__all__ = ["Frame", "FrameError", "Source", "SourceDropped", "SourceError", "SOURCES",
           "URL_SOURCES", "check_frame", "open_source", "redact", "register_source"]


def register_source(prefix: str, opener: Opener) -> None:
    """Add a source kind: `prefix:ARG` specs go to `opener(ARG)`."""
    SOURCES[prefix] = opener


def open_source(spec: str) -> Source:
    """The (not yet opened) source a spec names; SourceError if it names none."""
    if spec.startswith("env:"):
        name = spec[4:]
        if not os.environ.get(name):
            raise SourceError(f"--source env:{name}: ${name} is not set")
        spec = os.environ[name]
    scheme, sep, rest = spec.partition("://")
    if sep and scheme.lower() in URL_SOURCES:
        return URL_SOURCES[scheme.lower()](spec)
    prefix, _, arg = spec.partition(":")
    if prefix in SOURCES and not Path(spec).exists():
        return SOURCES[prefix](arg)
    path = Path(spec)
    if path.is_dir():
        return open_image_folder(spec)
    if path.is_file():
        return open_video_file(spec)
    kinds = ", ".join([*(f"{p}:..." for p in SOURCES), "rtsp://...", "a folder", "a video file"])
    if path.suffix and "://" not in spec:  # a file name that is not there
        raise SourceError(f"--source {redact(spec)}: no such file or folder; a source is one of "
                          f"{kinds}")
    raise SourceError(f"--source {redact(spec)}: not a known source ({kinds})")
