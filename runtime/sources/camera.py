"""`camera:N`: a V4L2 camera (/dev/videoN) through OpenCV."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from edgekv.runtime.sources.base import SourceError
from edgekv.runtime.sources.capture import CaptureSource, import_cv2


class CameraSource(CaptureSource):
    live = True

    def __init__(self, device: int) -> None:
        super().__init__()
        self.device = device
        self.name = f"camera:{device}"

    def target(self) -> tuple[Any, int]:
        cv2 = import_cv2()
        # V4L2 on Linux (a Jetson's USB cameras); elsewhere let OpenCV choose.
        return self.device, cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY


def open_camera(arg: str, dev: Path = Path("/dev")) -> CameraSource:
    try:
        device = int(arg or "0")
    except ValueError:
        raise SourceError(f"camera:{arg}: expected a device number, e.g. camera:0") from None
    # A camera that is not there fails now, before the model loads, not as "cannot open"
    # after it. (Once a stream runs, an unplugged camera is waited for: reconnect.py.)
    node = dev / f"video{device}"
    if sys.platform.startswith("linux") and not node.exists():
        present = sorted(p.name for p in dev.glob("video*"))
        found = f"cameras here: {', '.join(present)}" if present else "no camera is attached"
        raise SourceError(f"camera:{device}: there is no {node} ({found})")
    return CameraSource(device)
