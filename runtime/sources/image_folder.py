"""A folder of images, read in natural order (frame2 before frame10). Each image is one frame
and one second of stream time. An image that does not decode is skipped with a warning."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgekv.runtime.sources.base import Frame, FrameError, SourceError, check_frame

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SECONDS_PER_IMAGE = 1.0


def natural_key(path: Path) -> list[object]:
    """'img10.png' -> ['img', 10, '.png'], so numbers sort as numbers. The split puts the
    numbers at odd places; `str.isdigit` would also take '²' (which int() refuses)."""
    return [int(part) if i % 2 else part.lower()
            for i, part in enumerate(re.split(r"(\d+)", path.name))]


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> [H, W, 3] uint8 RGB, or FrameError. Decoded as `--image` and HF
    decode a file (Pillow; transparency onto white, no EXIF turn), so a picture in a folder is
    the same picture as given alone."""
    from edgekv.runtime.preprocess import DECODE_ERRORS, read_rgb

    try:
        rgb = read_rgb(io.BytesIO(data))
    except DECODE_ERRORS as exc:
        # Pillow quotes the file object it was given ("<_io.BytesIO object at 0x...>"): noise
        # in a warning that names the file already.
        reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc)).strip()
        raise FrameError(f"not a decodable image ({reason or type(exc).__name__})") from exc
    return check_frame(np.asarray(rgb))


def image_files(folder: Path) -> Iterator[Path]:
    """The pictures of `folder` by name, unsorted. Hidden files are not frames: macOS leaves a
    `._name.jpg` (AppleDouble metadata, not a picture) beside each file on a shared drive."""
    return (p for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


class ImageFolderSource:
    live = False

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = str(folder)
        self.files: list[Path] = []
        self.index = 0

    def open(self) -> None:
        # Only names are listed up front (a few bytes each); images are read one at a time.
        self.files = sorted(image_files(self.folder), key=natural_key)
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
    if next(image_files(folder), None) is None:  # before the model loads, not after
        raise SourceError(f"no images in {folder} ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return ImageFolderSource(folder)
