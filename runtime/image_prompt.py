"""Rendered prompt text + pictures -> one stream of embeddings for the decoder.

Mirrors the HF processors: each image placeholder the chat template wrote is expanded to the
family's image-token layout, the text is tokenized, and the image tokens' embeddings are
replaced by the vision graph's output in order (HF's `masked_scatter`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekv.export.vision_spec import IDEFICS3_ROWS, REPEAT, ImageLayout, Preprocess
from edgekv.runtime import mrope
from edgekv.runtime.cache import IMAGE, NO_PLACE, TEXT
from edgekv.runtime.errors import ImageError
from edgekv.runtime.preprocess import preprocess


@dataclass
class Prompt:
    embeds: np.ndarray  # [1, n, H]
    modality: np.ndarray  # [n] TEXT / IMAGE
    group: np.ndarray  # [n] image number (first_image, first_image + 1, ...) or 0 for text
    place: np.ndarray  # [n] token index inside its image (grid place), NO_PLACE for text
    mrope_pos: np.ndarray | None = None  # [3, n] for M-RoPE bundles
    mrope_extent: np.ndarray | None = None  # [n]

    def __len__(self) -> int:
        return self.embeds.shape[1]

    def runs(self, chunk: int) -> list[tuple[int, int]]:
        """(start, end) of chunks of at most `chunk` tokens, cut where text turns into an image
        or one image into the next."""
        key = self.modality.astype(np.int64) * (1 << 32) + self.group
        cuts = [0, *np.flatnonzero(np.diff(key)) + 1, len(self)]
        bounds = zip(cuts[:-1], cuts[1:], strict=True)
        return [(s, min(s + chunk, end)) for start, end in bounds for s in range(start, end, chunk)]


def frames_per_image(pre: Preprocess) -> int:
    return pre.tile_rows * pre.tile_cols + 1 if (pre.tile_rows or pre.tile_cols) else 1


def image_text(layout: ImageLayout, pre: Preprocess) -> str:
    """What one image placeholder expands to (the HF processor's `replace_image_token`)."""
    run = layout.image_token * layout.tokens_per_frame
    if layout.kind == REPEAT:
        return run
    if layout.kind != IDEFICS3_ROWS:
        raise ImageError(f"unknown image layout {layout.kind!r} in the manifest")
    glob = f"{layout.fake_token}{layout.global_token}{run}{layout.fake_token}"
    if not (pre.tile_rows or pre.tile_cols):
        return glob
    rows = "".join(
        "".join(f"{layout.fake_token}<row_{r + 1}_col_{c + 1}>{run}" for c in range(pre.tile_cols))
        + "\n"
        for r in range(pre.tile_rows)
    )
    return f"{rows}\n{glob}"


def build(
    bundle: Any, encoder: Any, text: str, images: list[Any], mrope_start: int = 0,
    first_image: int = 1,
) -> Prompt:
    """The embeddings of `text` (chat-template output with one placeholder per image) with
    `images` (paths, PIL images or RGB arrays) encoded in place of their image tokens."""
    spec = bundle.manifest.vision
    layout, pre = spec.layout, spec.preprocess
    pieces = text.split(layout.placeholder)
    if len(pieces) - 1 != len(images):
        raise ImageError(f"the prompt has {len(pieces) - 1} image placeholders "
                         f"({layout.placeholder}) but {len(images)} images were given")
    frames = [preprocess(image, pre) for image in images]  # bad input fails before any work
    expansion = image_text(layout, pre)
    ids = np.asarray(bundle.text.encode(expansion.join(pieces)), dtype=np.int64)
    embeds = bundle.embed(ids).copy()
    is_image = ids == layout.image_token_id
    per_image = layout.tokens_per_frame * frames_per_image(pre)
    if is_image.sum() != per_image * len(images):
        raise ImageError(f"the prompt has {int(is_image.sum())} image tokens, expected "
                         f"{per_image * len(images)}: does the text contain stray image tokens?")
    if images:
        features = encoder.encode(np.concatenate(frames)).reshape(-1, embeds.shape[-1])
        embeds[0, is_image] = features.astype(embeds.dtype)
    image_index = np.cumsum(is_image) - 1  # running count of image tokens seen
    per_image = max(per_image, 1)
    group = np.where(is_image, first_image + image_index // per_image, 0)
    place = np.where(is_image, image_index % per_image, NO_PLACE)
    prompt = Prompt(embeds, np.where(is_image, IMAGE, TEXT).astype(np.int16),
                    group.astype(np.int32), place.astype(np.int32))
    if bundle.manifest.position_scheme == "mrope":
        prompt.mrope_pos, prompt.mrope_extent = positions(is_image, layout, mrope_start)
    return prompt


def positions(is_image: np.ndarray, layout: ImageLayout, start: int) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """M-RoPE (pos [3, n], extent [n]) of a token stream: text runs count up, each image takes
    its grid's positions and advances the counter by max(rows, cols) (HF `get_rope_index`)."""
    rows, cols = layout.grid
    pos, extent, at, counter = [], [], 0, start
    while at < len(is_image):
        if is_image[at]:
            p, e = mrope.image_positions(counter, rows, cols)
            at += rows * cols
            counter += int(e[0])
        else:
            end = at
            while end < len(is_image) and not is_image[end]:
                end += 1
            p, e = mrope.text_positions(counter, end - at)
            counter += end - at
            at = end
        pos.append(p)
        extent.append(e)
    if not pos:
        return np.zeros((3, 0), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(pos, axis=1), np.concatenate(extent)
