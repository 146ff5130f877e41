"""Text tables for the CLI: a memory plan, how it fits a device, budgets by device, profiles."""

from __future__ import annotations

from edgekv.export.manifest import DecoderDims
from edgekv.profiles.fit import choose_budget, device_plan, fit_warning
from edgekv.profiles.loader import DeviceProfile, MiB, list_profiles, load_profile
from edgekv.profiles.planner import TEXT_ONLY, BundleParts, MemoryPlan
from edgekv.runtime.errors import BudgetError


def plan_lines(memory_plan: MemoryPlan) -> list[str]:
    return [f"  {name:<12} {value / MiB:>10.1f} MiB" for name, value in memory_plan.rows()]


def device_fit_lines(d: DecoderDims, budget: int, chunk: int, dtype: str,
                     profile: DeviceProfile, parts: BundleParts = TEXT_ONLY) -> list[str]:
    """The plan on `profile` (its overhead and workspace), whether it fits, and the largest
    budget that would."""
    memory_plan = device_plan(d, budget, chunk, dtype, profile, parts)
    lines = [f"memory plan on {profile.name} ({dtype}, budget {budget}, chunk {chunk})",
             *plan_lines(memory_plan),
             f"  {'usable':<12} {profile.usable_bytes / MiB:>10.1f} MiB "
             f"(after a {profile.reserve_mb} MiB reserve)"]
    warning = fit_warning(memory_plan, profile)
    lines.append(f"fits        {'no: ' + warning if warning else 'yes'}")
    lines.append(f"largest fit {_largest(d, chunk, dtype, profile, parts)}")
    return lines


def budget_table(d: DecoderDims, chunk: int, dtype: str,
                 parts: BundleParts = TEXT_ONLY) -> list[str]:
    """The largest budget of this model (at this chunk and dtype) on every built-in device."""
    lines = [f"largest budget by device ({dtype}, chunk {chunk})"]
    for name in list_profiles():
        lines.append(f"  {name:<15} {_largest(d, chunk, dtype, load_profile(name), parts)}")
    return lines


def _largest(d: DecoderDims, chunk: int, dtype: str, profile: DeviceProfile,
             parts: BundleParts) -> str:
    try:
        choice = choose_budget(d, chunk, dtype, profile, parts)
    except BudgetError:
        return "does not fit"
    capped = " (capped by the model's context length)" if choice.limited_by == "context" else ""
    return f"budget {choice.budget}, planned {choice.plan.total / MiB:.0f} MiB{capped}"


def profile_lines() -> list[str]:
    lines = [f"{'name':<15} {'memory':>9} {'usable':>9}  {'shared':<6} {'dtype':<5} "
             f"{'chunk':>5}  software"]
    for name in list_profiles():
        p = load_profile(name)
        software = ", ".join(f"{k} {v}" for k, v in
                             (("JetPack", p.jetpack), ("TensorRT", p.tensorrt)) if v) or "-"
        lines.append(f"{p.name:<15} {p.memory_mb / 1024:>6.1f} GB {p.usable_bytes / 2**30:>6.1f} GB"
                     f"  {'yes' if p.shared_memory else 'no':<6} {p.precision:<5} "
                     f"{p.default_chunk:>5}  {software}")
    return lines
