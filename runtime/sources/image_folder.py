"""A folder of images, read in natural order (frame2 before frame10). Each image is one frame
and one second of stream time. An image that does not decode is skipped with a warning."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from edgekv.runtime.sources.base import Frame, FrameError, SourceError, check_frame

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SECONDS_PER_IMAGE = 1.0


def natural_key(path: Path) -> list[object]:
    """'img10.png' -> ['img', 10, '.png'], so numbers sort as numbers."""
    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r"(\d+)", path.name)]


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> [H, W, 3] uint8 RGB, or FrameError. Decoded as `--image` and HF
    decode a file (Pillow; transparency onto white, no EXIF turn), so a picture in a folder is
    the same picture as given alone."""
    from edgekv.runtime.preprocess import DECODE_ERRORS, read_rgb

    try:
        rgb = read_rgb(io.BytesIO(data))
    except DECODE_ERRORS as exc:
        raise FrameError(f"not a decodable image ({exc})") from exc
    return check_frame(np.asarray(rgb))


class ImageFolderSource:
    live = False

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = str(folder)
        self.files: list[Path] = []
        self.index = 0

    def open(self) -> None:
        # Only names are listed up front (a few bytes each); images are read one at a time.
        self.files = sorted((p for p in self.folder.iterdir()
                             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                            key=natural_key)
        if not self.files:
            raise SourceError(f"no images in {self.folder} "
                              f"({', '.join(sorted(IMAGE_SUFFIXES))})")

    def read(self) -> Frame | None:
        if self.index >= len(self.files):
            return None
        index = self.index
        self.index += 1
        path = self.files[index]
        try:
            image = decode_image(path.read_bytes())
        except (OSError, FrameError) as exc:
            raise FrameError(f"{path.name}: {exc}") from exc
        return Frame(image, index, index * SECONDS_PER_IMAGE)

    def close(self) -> None:
        pass


def open_image_folder(arg: str) -> ImageFolderSource:
    folder = Path(arg)
    if not folder.is_dir():
        raise SourceError(f"no such folder: {arg}")
    return ImageFolderSource(folder)
