"""`edgekv export MODEL --profile P`: read the model's dimensions first, then choose the
largest budget that fits on the device (or warn when the given one does not), then export.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from edgekv.export.exporter import ExportOptions, Log, export_model
from edgekv.export.families import adapter_for, family_of
from edgekv.export.loading import load, model_type, resolve
from edgekv.export.manifest import Manifest
from edgekv.profiles.fit import choose_budget, device_plan, fit_warning
from edgekv.profiles.loader import DeviceProfile
from edgekv.profiles.planner import BundleParts, MemoryPlan
from edgekv.runtime.errors import EdgeKVError


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def export_for_device(
    model_arg: str, out: str | Path, options: ExportOptions, profile: DeviceProfile,
    choose: bool, log: Log = _stderr,
) -> tuple[Manifest, MemoryPlan]:
    """Export MODEL for `profile`. With `choose`, `options.budget` is replaced by the largest
    budget that fits; otherwise the given budget is kept and a plan that does not fit warns.
    """
    options.check()
    if Path(out).exists() and not options.force:  # before the (slow) model load
        raise EdgeKVError(f"{out} exists; choose another --out or pass --force to replace it")
    source = resolve(model_arg)
    if (kind := model_type(source)) is not None:
        family_of(kind)  # an unsupported family is refused before its weights load
    log(f"loading {source.label}")
    model, tokenizer = load(source)
    _, adapter = adapter_for(model)
    dims = adapter.dims(model)
    # the vision weights are known only once exported; the cache's type is known now
    parts = BundleParts(kv_quant=options.kv_cache if options.kv_cache == "int8" else "")
    if choose:
        choice = choose_budget(dims, options.chunk, options.dtype, profile, parts)
        why = ("the model's context length" if choice.limited_by == "context"
               else "the device's memory")
        log(f"profile {profile.name}: budget {choice.budget} (largest multiple of chunk "
            f"{options.chunk} allowed by {why})")
        options = dataclasses.replace(options, budget=choice.budget)
    else:
        warning = fit_warning(device_plan(dims, options.budget, options.chunk, options.dtype,
                                          profile, parts), profile)
        if warning:
            log(f"warning: {warning}")
    manifest = export_model(model, tokenizer, source.label, out, options, log)
    return manifest, device_plan(dims, manifest.budget, manifest.chunk, manifest.dtype, profile,
                                 BundleParts.of(manifest))
