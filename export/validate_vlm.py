"""Compare a multimodal bundle with its HF model: same chat, same pictures, max |logit diff|.

HF's side is the HF processor (configured to the bundle's fixed resolution and tiling) and the
HF model's forward; edgekv's side is the bundle's template, preprocessing, vision graph and
decoder graph, fed chunk by chunk with the `full` policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekv.export.vision_spec import IDEFICS3, QWEN2_VL, VisionSpec
from edgekv.export.vlm_loading import VisionLanguageModel, hf_processor
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import ModelError
from edgekv.runtime.session import Session

QUESTION = "What is in the picture, and where is it?"


def messages(n_images: int, question: str = QUESTION) -> list[dict[str, Any]]:
    content = [{"type": "image"} for _ in range(n_images)]
    return [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]


def processor_kwargs(spec: VisionSpec) -> dict[str, Any]:
    """HF image-processor overrides that make HF produce the bundle's fixed frames."""
    pre = spec.preprocess
    if pre.kind == IDEFICS3:
        return {"do_image_splitting": bool(pre.tile_rows or pre.tile_cols),
                "size": {"longest_edge": pre.longest_edge},
                "max_image_size": {"longest_edge": pre.height}}
    if pre.kind == QWEN2_VL:
        pixels = pre.height * pre.width
        return {"size": {"shortest_edge": pixels, "longest_edge": pixels}}
    return {}


def sample_picture(spec: VisionSpec, seed: int = 0) -> Any:
    """A deterministic picture of the size the bundle's grid expects (PIL)."""
    from PIL import Image

    h, w = _picture_size(spec.preprocess)
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    wave = np.stack([np.sin(x / 4 + seed), np.cos(y / 6), np.sin((x + y) / 9)], -1)
    pixels = 127.5 * (1 + wave) + rng.normal(0, 15, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def hf_inputs(vlm: VisionLanguageModel, spec: VisionSpec, chat: list[dict[str, Any]],
              images: list[Any]) -> dict[str, Any]:
    processor = hf_processor(vlm)
    if spec.preprocess.kind == IDEFICS3:  # tokens per tile follow --image-size, not the config
        processor.image_seq_len = spec.layout.tokens_per_frame
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    return dict(processor(text=text, images=images, return_tensors="pt",
                          **processor_kwargs(spec)))


def hf_logits(model: Any, inputs: dict[str, Any]) -> np.ndarray:
    with torch.inference_mode():
        return model(**inputs).logits[0].float().numpy()


def bundle_logits(bundle_dir: str | Path, chat: list[dict[str, Any]], images: list[Any],
                  backend: str = "ort", step: Any = None) -> np.ndarray:
    """The bundle's logits [n, V] for the chat with `images`; with `step` (a DecoderStep), that
    step run eagerly in place of the decoder graph (the vision graph is still the bundle's)."""
    from edgekv.export.validate import step_session

    bundle = Bundle.open(bundle_dir)
    session = (Session.open(bundle, policy="full", backend=backend) if step is None
               else step_session(bundle, step))
    text = bundle.text.render(chat, add_generation_prompt=True)
    parts: list[np.ndarray] = []
    session.feed_prompt(text, images, on_chunk=lambda _o, logits: parts.append(logits.copy()))
    return np.concatenate(parts)


def fitted(picture: Any, spec: VisionSpec) -> Any:
    """`picture` at the size of the bundle's fixed frames where HF would size it by its aspect
    instead: Qwen2-VL's patch grid and an Idefics3 tile grid are fixed at export, and HF picks
    another for another aspect (another token count: no comparison). Other layouts take any
    picture as HF does."""
    from edgekv.runtime.preprocess import load_image

    pre = spec.preprocess
    if pre.kind != QWEN2_VL and not (pre.kind == IDEFICS3 and (pre.tile_rows or pre.tile_cols)):
        return picture
    h, w = _picture_size(pre)
    image = load_image(picture)
    return image if image.size == (w, h) else image.resize((w, h), resample=pre.resample)


def _picture_size(pre: Any) -> tuple[int, int]:
    """(height, width) of a picture that fills the bundle's frames exactly (its tile grid)."""
    return max(pre.tile_rows, 1) * pre.height, max(pre.tile_cols, 1) * pre.width


def _fitted_prompt(bundle_dir: str | Path, images: list[Any], question: str = QUESTION
                   ) -> tuple[VisionSpec, list[dict[str, Any]], list[Any]]:
    """(the bundle's vision spec, the chat, the pictures `fitted` to its frames)."""
    spec = Bundle.open(bundle_dir).manifest.vision
    return spec, messages(len(images), question), [fitted(image, spec) for image in images]


def _same_layout(ours: np.ndarray, ref: np.ndarray) -> None:
    if ours.shape != ref.shape:
        raise ModelError(f"edgekv fed {ours.shape[0]} tokens, HF {ref.shape[0]}: the prompt "
                         "layouts differ, so the logits cannot be compared")


def both_logits(bundle_dir: str | Path, vlm: VisionLanguageModel, images: list[Any],
                backend: str = "ort", question: str = QUESTION) -> tuple[np.ndarray, np.ndarray]:
    """(the bundle's, HF's) logits [n, V] for `images` followed by `question`; each picture
    first `fitted` to the bundle's frames."""
    spec, chat, images = _fitted_prompt(bundle_dir, images, question)
    ref = hf_logits(vlm.model, hf_inputs(vlm, spec, chat, images))
    ours = bundle_logits(bundle_dir, chat, images, backend)
    _same_layout(ours, ref)
    return ours, ref


def compare(bundle_dir: str | Path, vlm: VisionLanguageModel, images: list[Any],
            backend: str = "ort") -> tuple[float, int]:
    """(max |logit diff|, prompt tokens) for `images` followed by a question."""
    ours, ref = both_logits(bundle_dir, vlm, images, backend)
    return float(np.abs(ours - ref).max()), ours.shape[0]


def compare_quantized(bundle_dir: str | Path, vlm: VisionLanguageModel, images: list[Any],
                      float_step: Any, quantized_step: Any) -> tuple[float, float, int]:
    """(float-weight step vs HF, bundle vs its dequantized weights, prompt tokens) for an int4
    bundle and `images` followed by a question. Quantization moves the logits by more than any
    tolerance, so, as for text, the first proves that the vision graph, the prompt layout and
    the decoder are HF's model (eagerly, with the float weights), the second that the quantized
    graph computes its own weights."""
    spec, chat, images = _fitted_prompt(bundle_dir, images)
    ref = hf_logits(vlm.model, hf_inputs(vlm, spec, chat, images))
    structure = bundle_logits(bundle_dir, chat, images, step=float_step)
    _same_layout(structure, ref)
    ours = bundle_logits(bundle_dir, chat, images)
    exact = bundle_logits(bundle_dir, chat, images, step=quantized_step)
    return (float(np.abs(structure - ref).max()), float(np.abs(ours - exact).max()),
            ours.shape[0])
