"""Fitting the memory plan into a device profile: the largest budget that fits, or a warning
when a chosen budget does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekv.export.manifest import DecoderDims
from edgekv.profiles.loader import DeviceProfile, MiB
from edgekv.profiles.planner import TEXT_ONLY, BundleParts, MemoryPlan, largest_budget, plan
from edgekv.runtime.errors import BudgetError


@dataclass(frozen=True)
class BudgetChoice:
    budget: int
    limited_by: str  # "memory": the next chunk of slots would not fit; "context": the model's
    plan: MemoryPlan  # training length caps the cache before memory does
    usable: int  # bytes the profile leaves for the bundle


def device_plan(d: DecoderDims, budget: int, chunk: int, dtype: str,
                profile: DeviceProfile, parts: BundleParts = TEXT_ONLY) -> MemoryPlan:
    """The plan with the device's own runtime overhead and TensorRT workspace."""
    return plan(d, budget, chunk, dtype, overhead=profile.overhead_bytes,
                workspace=profile.workspace_bytes, parts=parts)


def context_cap(d: DecoderDims, chunk: int) -> int | None:
    """The largest useful budget for the model's context length, a multiple of `chunk`.

    In `cache` position mode slots are rotated to their rank, so the graph sees positions up
    to budget + chunk - 1; past the training length those positions were never trained.
    """
    if d.max_position_embeddings <= 0:
        return None
    return max(d.max_position_embeddings - chunk, 0) // chunk * chunk


def choose_budget(d: DecoderDims, chunk: int, dtype: str, profile: DeviceProfile,
                  parts: BundleParts = TEXT_ONLY) -> BudgetChoice:
    """The largest budget whose planned peak fits in the profile's usable memory."""
    usable = profile.usable_bytes
    by_memory = largest_budget(d, chunk, dtype, usable, profile.overhead_bytes,
                               profile.workspace_bytes, parts)
    if by_memory < chunk:
        empty = device_plan(d, 0, chunk, dtype, profile, parts)
        raise BudgetError(
            f"the model does not fit on {profile.name}: weights, one chunk and overhead alone "
            f"plan {empty.total / MiB:.0f} MiB of the {usable / MiB:.0f} MiB usable "
            f"({dtype}); use a smaller model, fp16, or a larger device"
        )
    cap = context_cap(d, chunk)
    if cap is not None and chunk <= cap < by_memory:
        budget, limited_by = cap, "context"
    else:
        budget, limited_by = by_memory, "memory"
    return BudgetChoice(budget, limited_by, device_plan(d, budget, chunk, dtype, profile, parts),
                        usable)


def fit_warning(memory_plan: MemoryPlan, profile: DeviceProfile) -> str | None:
    """A one-line warning when the plan exceeds the profile's usable memory, else None."""
    usable = profile.usable_bytes
    if memory_plan.total <= usable:
        return None
    return (f"the planned peak {memory_plan.total / MiB:.0f} MiB exceeds the "
            f"{usable / MiB:.0f} MiB usable on {profile.name} (after its {profile.reserve_mb} "
            "MiB reserve); lower --budget or --chunk, or omit --budget to choose one that fits")
