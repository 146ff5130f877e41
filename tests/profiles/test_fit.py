"""Choosing a budget for a device, and warning when a given one does not fit."""

import dataclasses

import pytest
from smollm2_dims import SMOLLM2

from edgekv.profiles.fit import choose_budget, context_cap, device_plan, fit_warning
from edgekv.profiles.loader import MiB, load_profile
from edgekv.profiles.planner import BundleParts, kv_bytes
from edgekv.runtime.errors import BudgetError

# A model whose context length never binds, so the device's memory decides.
LONG = dataclasses.replace(SMOLLM2, max_position_embeddings=0)


def test_choice_fits_and_one_more_chunk_would_not():
    nano = load_profile("orin-nano-8gb")
    choice = choose_budget(LONG, 64, "fp16", nano)
    assert choice.limited_by == "memory"
    assert choice.plan.total <= nano.usable_bytes == choice.usable
    assert device_plan(LONG, choice.budget + 64, 64, "fp16", nano).total > nano.usable_bytes


def test_a_bigger_device_gets_a_bigger_budget():
    budgets = [choose_budget(LONG, 64, "fp16", load_profile(n)).budget
               for n in ("orin-nano-8gb", "orin-nx-16gb", "agx-orin-64gb")]
    assert budgets == sorted(budgets) and len(set(budgets)) == 3


def test_the_models_context_length_caps_the_budget():
    choice = choose_budget(SMOLLM2, 32, "fp16", load_profile("agx-orin-64gb"))
    assert choice.limited_by == "context"
    assert choice.budget == context_cap(SMOLLM2, 32) == 8192 - 32


def test_profile_overhead_and_workspace_are_in_the_device_plan():
    nano = load_profile("orin-nano-8gb")
    p = device_plan(SMOLLM2, 512, 64, "fp16", nano)
    assert p.overhead == nano.overhead_bytes and p.workspace == nano.workspace_bytes


def test_too_large_a_model_is_a_clear_error():
    tiny_device = dataclasses.replace(load_profile("orin-nano-8gb"), reserve_mb=7300)
    with pytest.raises(BudgetError, match="does not fit on orin-nano-8gb"):
        choose_budget(SMOLLM2, 64, "fp32", tiny_device)


def test_warning_only_when_the_plan_exceeds_usable_memory():
    nano = load_profile("orin-nano-8gb")
    assert fit_warning(device_plan(SMOLLM2, 1024, 64, "fp16", nano), nano) is None
    huge = device_plan(LONG, 200_000, 64, "fp16", nano)
    assert "exceeds" in fit_warning(huge, nano)


def test_a_bundles_vision_weights_and_int8_cache_are_in_the_device_plan():
    nano = load_profile("orin-nano-8gb")
    parts = BundleParts(vision=300 * MiB, kv_quant="int8")
    p = device_plan(LONG, 4096, 64, "fp16", nano, parts)
    assert p.vision == 300 * MiB
    assert p.kv_cache == kv_bytes(LONG, 4096, "fp16", "int8") == kv_bytes(LONG, 4096, "fp16") // 2
    # the budget chosen for the device counts both: an int8 cache fits more slots, vision fewer
    plain = choose_budget(LONG, 64, "fp16", nano).budget
    assert choose_budget(LONG, 64, "fp16", nano, BundleParts(kv_quant="int8")).budget > plain
    with_vision = choose_budget(LONG, 64, "fp16", nano, BundleParts(vision=300 * MiB))
    assert with_vision.budget < plain and with_vision.plan.total <= nano.usable_bytes
