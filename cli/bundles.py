"""`edgekv export / info / profiles / profile / check / build / policies`: bundles, devices
and policies."""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import Any

from edgekv.cli.common import print_lines, writable
from edgekv.runtime.errors import EdgeKVError

DEFAULT_BUDGET, DEFAULT_CHUNK = 2048, 64


def _export(args: argparse.Namespace) -> int:
    from edgekv.export.exporter import ExportOptions, export
    from edgekv.profiles.planner import bundle_plan
    from edgekv.profiles.report import plan_lines

    profile = _load_profile(args.profile)
    # A profile supplies the chunk, dtype and (chosen to fit) budget the user did not give.
    options = ExportOptions(
        budget=args.budget or DEFAULT_BUDGET,
        chunk=args.chunk or (profile.default_chunk if profile else DEFAULT_CHUNK),
        dtype=args.dtype or (profile.precision if profile else "fp32"),
        position_mode=args.position_mode, opset=args.opset, tolerance=args.tolerance,
        validate=not args.no_validate, force=args.force, lm_head=args.lm_head,
        target=args.target, key_rope=args.key_rope, int4_compute=args.int4_compute,
        attention=args.attention, attn_mass=args.attn_mass, packed_lm_head=args.packed_lm_head,
        kv_cache=args.kv_cache, image_size=_pair(args.image_size, "--image-size"),
        frames_per_call=args.frames_per_call, tiling=_tiling(args.tiling))
    if profile is None:
        manifest = export(args.model, args.out, options)
        print_lines(plan_lines(bundle_plan(manifest)))
        return 0
    from edgekv.profiles.export_fit import export_for_device

    _, memory_plan = export_for_device(args.model, args.out, options, profile,
                                       choose=args.budget is None)
    print(f"memory plan on {profile.name}")
    print_lines(plan_lines(memory_plan))
    return 0


def _load_profile(name: str | None):  # noqa: ANN202 - DeviceProfile | None, imported lazily
    from edgekv.profiles.loader import load_profile

    return load_profile(name) if name else None


def _pair(text: str | None, flag: str) -> tuple[int, int] | None:
    """'448' -> (448, 448); '336x448' -> (336, 448) (height x width)."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 0:
        raise EdgeKVError(f"{flag} {text!r}: expected N or HxW (e.g. 448 or 336x448)")
    return (values[0], values[-1])


def _tiling(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    if text == "global":
        return (0, 0)
    return _pair(text, "--tiling")


def _info(args: argparse.Namespace) -> int:
    from edgekv.export.manifest import load_manifest
    from edgekv.profiles.planner import BundleParts, bundle_plan
    from edgekv.profiles.report import budget_table, device_fit_lines, plan_lines

    profile = _load_profile(args.profile)  # a bad name fails before anything is printed
    m = load_manifest(args.bundle, verify=not args.no_verify)
    d = m.dims
    print(f"bundle      {args.bundle}")
    print(f"model       {m.model} ({m.family})")
    print(f"dims        {d.num_layers} layers, hidden {d.hidden_size}, {d.num_heads} heads, "
          f"{d.num_kv_heads} KV heads x {d.head_dim}, vocab {d.vocab_size}")
    print(f"contract    budget {m.budget} slots, chunk 1..{m.chunk}, {m.dtype}, "
          f"positions {m.position_mode}, opset {m.opset}")
    if m.vision is not None:
        v = m.vision
        print(f"vision      {v.graph} {'x'.join(map(str, v.input_shape))} -> "
              f"{v.layout.tokens_per_frame} tokens/frame, positions {m.position_scheme}")
    print(f"exported    --attention {m.attention} --key-rope {m.key_rope} --kv-cache "
          f"{m.kv_quant or 'float'}"
          + ("" if m.attn_mass else " --no-attn-mass (runs streaming, window and full only)"))
    if m.validation:
        v = m.validation
        # int4 and int8-cache bundles: max_abs_logit_diff is against the weights and cache
        # they compute with; against HF each rewrite after validation moved them again
        vs_hf = max(v.get(k, 0.0) for k in ("vs_hf", "compute_vs_hf", "kv_int8_vs_hf"))
        if m.dtype == "int4" or m.kv_quant:
            print(f"validated   max |logit diff| {v['max_abs_logit_diff']:.2e} vs the exact "
                  f"reference, {vs_hf:.2e} vs HF (quantization)")
        else:
            print(f"validated   max |logit diff| {v['max_abs_logit_diff']:.2e} vs HF")
    parts = BundleParts.of(m)
    if profile is not None:
        print_lines(device_fit_lines(d, m.budget, m.chunk, m.dtype, profile, parts))
        return 0
    print("memory plan (this machine's CPU)")
    print_lines(plan_lines(bundle_plan(m)))
    print_lines(budget_table(d, m.chunk, m.dtype, parts))
    return 0


def _profiles(args: argparse.Namespace) -> int:
    from edgekv.profiles.report import profile_lines

    print_lines(profile_lines())
    return 0


def _profile(args: argparse.Namespace) -> int:
    from edgekv.tools.memprof import profile_command

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise EdgeKVError("give the command to profile after --, e.g. "
                          "edgekv profile -- edgekv eval ppl BUNDLE --text FILE")
    if args.interval <= 0:
        raise EdgeKVError(f"--interval must be positive, not {args.interval}")
    writable(args.out, "--out")
    writable(args.plot, "--plot")
    if shutil.which(command[0]) is None:
        raise EdgeKVError(f"no command {command[0]!r} to profile (not found on PATH)")
    report = profile_command(command, interval=args.interval)
    print_lines(report.summary_lines())
    if args.out:
        report.save(args.out)
    if args.plot:
        from edgekv.tools.memplot import plot_report

        plot_report(report, args.plot)
    return report.exit_code or 0


def _check(args: argparse.Namespace) -> int:
    from edgekv.export.trt_check import check_bundle

    report = check_bundle(args.bundle, args.target)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _build(args: argparse.Namespace) -> int:
    from edgekv.runtime.build_options import resolve_options
    from edgekv.runtime.engine_build import build_bundle

    options = resolve_options(args.fp16, args.workspace, args.profile,
                              log=lambda m: print(f"edgekv: {m}", file=sys.stderr))
    manifest = build_bundle(args.bundle, options)
    for name, record in manifest.engines["graphs"].items():
        print(f"{name}: {record['file']} (TensorRT {manifest.engines['tensorrt_version']}, "
              f"{manifest.engines['precision']})")
    return 0


def _policies(args: argparse.Namespace) -> int:
    from edgekv.runtime.policies import POLICIES

    for name, cls in POLICIES.items():
        params = ", ".join(f"{k}={v}" for k, v in cls().params().items()) or "-"
        print(f"{name:<12} {cls.summary}\n{'':<12} parameters: {params}")
    print("compose two as PREFILL+DECODE (e.g. structured+h2o): the first for prompts and "
          "frames, the second for the answer's tokens")
    return 0


def add_parsers(sub: Any) -> None:
    """This module's commands, on the `edgekv` parser's subcommands."""
    p = sub.add_parser("export", help="export a model to a bundle")
    p.add_argument("model", help="HF model directory, .gguf file, or built-in name (smollm2-135m)")
    p.add_argument("--out", required=True)
    p.add_argument("--budget", type=int, default=None,
                   help=f"KV slots, fixed in the graph (default {DEFAULT_BUDGET}; with "
                   "--profile: the largest that fits)")
    p.add_argument("--chunk", type=int, default=None,
                   help=f"largest chunk per decoder call (default {DEFAULT_CHUNK} or the "
                   "profile's)")
    p.add_argument("--dtype", default=None, choices=["fp32", "fp16", "int4"],
                   help="default fp32, or the profile's precision")
    p.add_argument("--profile", default=None, help="device profile name or .toml path")
    p.add_argument("--position-mode", default="cache", choices=["cache", "absolute"])
    p.add_argument("--target", default="ort", choices=["ort", "tensorrt"],
                   help="ort: ONNX Runtime's fused ops and per-layer cache inputs (default); "
                   "tensorrt: standard ops only (what TensorRT 10.3 parses)")
    p.add_argument("--lm-head", default="int8", choices=["int8", "fp32"],
                   help="--dtype int4: the lm_head as 8-bit blocks (default) or fp32")
    p.add_argument("--int4-compute", default="int8", choices=["int8", "fp32"],
                   help="--dtype int4: int8 activations, integer dot products (default; "
                   "+0.5%% perplexity on SmolLM2) or fp32 (the exact dequantized weights)")
    p.add_argument("--key-rope", default="graph", choices=["graph", "cached"],
                   help="graph: keys cached before RoPE, rotated in every call (the contract; "
                   "every backend); cached: keys cached rotated, the runtime re-rotates only "
                   "what moves (--target ort, host-cache backends)")
    p.add_argument("--attention", default="graph", choices=["graph", "gqa"],
                   help="graph: attention in standard ops; gqa: one ONNX Runtime "
                   "GroupQueryAttention per layer (needs --key-rope cached)")
    p.add_argument("--no-attn-mass", dest="attn_mass", action="store_false",
                   help="do not compute the attention mass (faster; only streaming, window and "
                   "full run such a bundle)")
    p.add_argument("--kv-cache", default="float", choices=["float", "int8"],
                   help="int8: the cache holds int8 K/V with a scale per layer, calibrated at "
                   "export (a decode step reads a quarter of the bytes; a chunk dequantizes the "
                   "rows it attends to). Needs --attention gqa --no-attn-mass")
    p.add_argument("--packed-lm-head", action="store_true",
                   help="tied embeddings, --target ort: ONNX Runtime packs its own copy of the "
                   "lm_head (a faster product, the same peak memory here; default: the lm_head "
                   "reads embed.bin's pages)")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--tolerance", type=float, default=None, help="max |logit diff| accepted")
    p.add_argument("--no-validate", action="store_true")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--image-size", default=None, metavar="HxW",
                   help="vision frame size, fixed in the vision graph (vision-language models)")
    p.add_argument("--frames-per-call", type=int, default=1,
                   help="frames per vision-graph call (its fixed batch)")
    p.add_argument("--tiling", default=None, metavar="RxC|global",
                   help="Idefics3/SmolVLM: a fixed tile grid plus the global view, or 'global'")
    p.set_defaults(func=_export)

    p = sub.add_parser("info", help="manifest summary and memory plan")
    p.add_argument("bundle")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
    p.add_argument("--profile", default=None, help="device profile name or .toml path")
    p.set_defaults(func=_info)

    p = sub.add_parser("profiles", help="list device profiles")
    p.set_defaults(func=_profiles)

    p = sub.add_parser("profile", help="run a command and measure its memory",
                       usage="edgekv profile [--interval S] [--out JSON] [--plot PNG] -- COMMAND")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    p.add_argument("--out", default=None, help="write the report (JSON) here")
    p.add_argument("--plot", default=None, help="draw memory over time with the plan (PNG)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(func=_profile)

    p = sub.add_parser("check", help="static check of a bundle's graphs for TensorRT")
    p.add_argument("bundle")
    p.add_argument("--target", default="tensorrt-10.3", help="support list to check against")
    p.set_defaults(func=_check)

    p = sub.add_parser("build", help="TensorRT engines for a bundle (on the device)")
    p.add_argument("bundle")
    p.add_argument("--fp16", action="store_true", help="allow fp16 kernels")
    p.add_argument("--workspace", type=int, default=None, help="builder workspace, MiB")
    p.add_argument("--profile", default=None, help="device profile: name or .toml path")
    p.set_defaults(func=_build)

    p = sub.add_parser("policies", help="list KV policies and their parameters")
    p.set_defaults(func=_policies)
