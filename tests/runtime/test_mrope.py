"""M-RoPE positions: the runtime's 3-component positions equal HF's, and the cache's `cache`
position mode re-bases kept segments without changing an image's inner layout."""

import numpy as np
import torch
import vlm_fixtures

from edgekv.export.loading import resolve
from edgekv.export.validate_vlm import hf_inputs, messages
from edgekv.export.vlm_loading import load_vision_language
from edgekv.runtime import mrope
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.cache import KVCache
from edgekv.runtime.image_prompt import build
from edgekv.runtime.session import Session


def test_prompt_positions_equal_hf_rope_index(vlm_dir, vlm_bundle):
    bundle = Bundle.open(vlm_bundle("qwen2_vl"))
    vlm = load_vision_language(resolve(str(vlm_dir("qwen2_vl"))))
    frames = [vlm_fixtures.image(64, 96, seed=i) for i in range(3)]
    chat = messages(3)
    inputs = hf_inputs(vlm, bundle.manifest.vision, chat, frames)
    ref, _ = vlm.model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                            image_grid_thw=inputs["image_grid_thw"])
    session = Session.open(bundle, policy="full")
    prompt = build(bundle, session._vision_encoder(), bundle.text.render(chat, True), frames)
    assert np.array_equal(prompt.mrope_pos, ref[:, 0].numpy())


def test_cache_and_absolute_modes_agree_without_eviction(vlm_bundle):
    bundle = Bundle.open(vlm_bundle("qwen2_vl"))
    text = bundle.text.render(messages(2), add_generation_prompt=True)
    frames = [vlm_fixtures.image(64, 96, seed=i) for i in range(2)]
    last = [Session.open(bundle, policy="full", position_mode=mode).feed_prompt(text, frames)
            for mode in ("cache", "absolute")]
    assert np.abs(last[0] - last[1]).max() <= 1e-5


def _cache_with(segments: list[tuple[int, int]]) -> tuple[KVCache, np.ndarray, np.ndarray]:
    """A 1-layer, 1-head cache holding `segments` ((rows, cols) images; (0, 0) = a text
    token) in stream order; returns it with the absolute positions and extents written."""
    pos, extent, counter = [], [], 0
    for rows, cols in segments:
        p, e = mrope.image_positions(counter, rows, cols) if rows else mrope.text_positions(
            counter, 1)
        pos.append(p)
        extent.append(e)
        counter += int(e[0])
    pos, extent = np.concatenate(pos, 1), np.concatenate(extent)
    n = pos.shape[1]
    cache = KVCache.allocate(1, 1, n + 8, 2, mrope=True)
    slots = np.arange(n)[None, None]
    zeros = np.zeros((1, 1, n, 2), dtype=np.float32)
    cache.write(slots, zeros, zeros, np.arange(n))
    cache.mrope.write(slots, pos, extent)
    return cache, pos, extent


def test_cache_mode_closes_gaps_of_evicted_segments():
    segments = [(0, 0), (0, 0), (0, 0), (2, 3), (0, 0), (3, 2), (0, 0)]
    cache, pos, extent = _cache_with(segments)
    units = int((pos[0] + extent).max())
    chunk = mrope.text_positions(units, 2)[0]
    # Evict the 2nd text token and every token of the first image.
    first_image = np.flatnonzero(extent == 3)[:6]
    evicted = np.zeros(cache.capacity, dtype=bool)
    evicted[[1, *first_image]] = True
    cache.evict(evicted[None, None])
    slot_pos, _, chunk_pos = mrope.graph_inputs(cache, chunk, units, "cache")

    kept = np.flatnonzero(cache.valid[0, 0])
    # Each kept token moves down by the position units evicted before it: 1 for the text
    # token, 3 (= max(rows, cols)) for the image; an image's row/col offsets are unchanged.
    freed_before = np.array([(1 if k > 1 else 0) + (3 if k > first_image[-1] else 0)
                             for k in kept])
    assert np.array_equal(slot_pos[:, 0, 0, kept], pos[:, kept] - freed_before)
    assert np.array_equal(chunk_pos, chunk - 4)
    absolute, _, same_chunk = mrope.graph_inputs(cache, chunk, units, "absolute")
    assert np.array_equal(absolute[:, 0, 0, kept], pos[:, kept])
    assert np.array_equal(same_chunk, chunk)


def test_decoder_rotates_each_frequency_by_its_section():
    from edgekv.export.decoder_step import _mrope_select

    select = _mrope_select([2, 3, 3])
    assert select.shape == (3, 8)
    assert torch.equal(select.sum(0), torch.ones(8))
    assert select.argmax(0).tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
