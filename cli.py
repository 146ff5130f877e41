"""The `edgekv` command: a thin layer over the library. Errors become one line and exit code 2."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from edgekv.runtime.errors import EdgeKVError
from edgekv.tools.int_list import int_list

Handler = Callable[[argparse.Namespace], int]
DEFAULT_BUDGET, DEFAULT_CHUNK = 2048, 64
VERIFY_PROMPT = "The capital of France is Paris, and the capital of"


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
        _print_lines(plan_lines(bundle_plan(manifest)))
        return 0
    from edgekv.profiles.export_fit import export_for_device

    _, memory_plan = export_for_device(args.model, args.out, options, profile,
                                       choose=args.budget is None)
    print(f"memory plan on {profile.name}")
    _print_lines(plan_lines(memory_plan))
    return 0


def _load_profile(name: str | None):  # noqa: ANN202 - DeviceProfile | None, imported lazily
    from edgekv.profiles.loader import load_profile

    return load_profile(name) if name else None


def _print_lines(lines: list[str], stream: TextIO | None = None) -> None:
    print("\n".join(lines), file=stream or sys.stdout)


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
        _print_lines(device_fit_lines(d, m.budget, m.chunk, m.dtype, profile, parts))
        return 0
    print("memory plan (this machine's CPU)")
    _print_lines(plan_lines(bundle_plan(m)))
    _print_lines(budget_table(d, m.chunk, m.dtype, parts))
    return 0


def _profiles(args: argparse.Namespace) -> int:
    from edgekv.profiles.report import profile_lines

    _print_lines(profile_lines())
    return 0


def _profile(args: argparse.Namespace) -> int:
    from edgekv.tools.memprof import profile_command

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise EdgeKVError("give the command to profile after --, e.g. "
                          "edgekv profile -- edgekv eval ppl BUNDLE --text FILE")
    if args.interval <= 0:
        raise EdgeKVError(f"--interval must be positive, not {args.interval}")
    _writable(args.out, "--out")
    _writable(args.plot, "--plot")
    if shutil.which(command[0]) is None:
        raise EdgeKVError(f"no command {command[0]!r} to profile (not found on PATH)")
    report = profile_command(command, interval=args.interval)
    _print_lines(report.summary_lines())
    if args.out:
        report.save(args.out)
    if args.plot:
        from edgekv.tools.memplot import plot_report

        plot_report(report, args.plot)
    return report.exit_code or 0


def _say(line: str) -> None:
    print(f"edgekv: {line}", file=sys.stderr)


def _open_session(args: argparse.Namespace):  # noqa: ANN202 - Session, imported lazily
    from edgekv.profiles.planner import bundle_plan
    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.session import Session
    from edgekv.tools import phases

    phases.mark("load")
    bundle = Bundle.open(args.bundle)
    m = bundle.manifest
    phases.record_plan(bundle_plan(m).rows())
    say = _say if args.command == "run" else None  # `run` says which backend `auto` chose
    return Session.open(bundle, policy=args.policy, backend=args.backend,
                        budget=getattr(args, "budget", None), threads=args.threads, say=say)


def _run(args: argparse.Namespace) -> int:
    streaming = {"--ask": args.ask, "--every": args.every, "--fps": args.fps,
                 "--max-frames": args.max_frames, "--duration": args.duration,
                 "--transcript": args.transcript}
    given = [flag for flag, value in streaming.items() if value]
    if given and not args.source:
        raise EdgeKVError(f"{', '.join(given)} only apply to a stream: add --source SRC")
    if args.image and args.source:
        raise EdgeKVError("--image is for one question about pictures; a stream takes its "
                          "pictures from --source")
    for flag in ("memory_log", "transcript"):
        _writable(getattr(args, flag, None), "--" + flag.replace("_", "-"))
    # 0 is allowed (feed the prompt, answer nothing); a negative count was silently 0
    if args.max_new_tokens < 0:
        raise EdgeKVError(f"--max-new-tokens must be at least 0, not {args.max_new_tokens}")
    if args.memory_log:
        from edgekv.tools.memprof import MemoryLog

        with MemoryLog(args.memory_log):
            return _stream(args) if args.source else _chat(args)
    return _stream(args) if args.source else _chat(args)


def _stream(args: argparse.Namespace) -> int:
    """`run --source`: frames into the session, questions answered as the stream runs."""
    from edgekv.runtime.sampler import Sampler
    from edgekv.runtime.schedule import parse_every
    from edgekv.runtime.sources import open_source
    from edgekv.runtime.sources.frames import StreamLimits
    from edgekv.runtime.stop import StopOnSignal
    from edgekv.runtime.stream_app import StreamConfig, run_stream, stream_session
    from edgekv.tools import phases

    if args.prompt and args.system:
        raise EdgeKVError("with --source, --prompt is the system message: give it or --system")
    if args.every and not args.ask:
        raise EdgeKVError("--every needs --ask QUESTION")
    config = StreamConfig(StreamLimits(args.fps, args.max_frames, args.duration), args.ask,
                          parse_every(args.every) if args.every else None, args.transcript,
                          status=not args.no_status, max_new_tokens=args.max_new_tokens,
                          stop_at=tuple(args.stop))
    source = open_source(args.source)  # a wrong spec fails before the model loads
    sampler = Sampler(temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    session = _open_session(args)
    frames_in = stream_session(session)
    system = args.prompt or args.system
    if system:  # a standing instruction: protected, so no stream length evicts it
        session.add_system(system)
    phases.mark("stream")  # for --memory-log / edgekv profile: loading ends, frames begin
    with StopOnSignal() as stopper:
        summary = run_stream(frames_in, source, config, sampler, stdin=sys.stdin,
                             stop=stopper.stop)
    summary.ended_by = stopper.signal_name or summary.ended_by
    _print_lines([f"edgekv: {line}" for line in summary.lines()], sys.stderr)
    return 0


def _chat(args: argparse.Namespace) -> int:
    from edgekv.runtime.errors import BudgetError
    from edgekv.runtime.sampler import Sampler
    from edgekv.tools import phases

    if args.prompt is not None and not args.prompt.strip():
        # `if args.prompt` took an empty one for none given: the run then waited on stdin
        raise EdgeKVError("--prompt is empty: give a question, or leave --prompt out to chat "
                          "on stdin")
    sampler = Sampler(temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    session = _open_session(args)
    if args.system:
        session.messages.append({"role": "system",
                                 "content": session.message_content(args.system)})
    for image in args.image:
        session.append_image(image)
    questions = [args.prompt] if args.prompt is not None else _stdin_lines()
    evicted = False
    try:
        for question in questions:
            phases.mark("prefill")
            try:
                pieces = session.ask(question, args.max_new_tokens, sampler, tuple(args.stop))
            except BudgetError as exc:
                if args.prompt is not None:
                    raise
                # a chat goes on: the refused turn changed nothing
                print(f"edgekv: error: {exc}", file=sys.stderr)
                continue
            for i, piece in enumerate(pieces):
                if i == 0:
                    phases.mark("decode")
                if not evicted and session.cache.evictions:
                    evicted = True
                    phases.mark("first-eviction")
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.write("\n")
    c = session.cache
    print(f"[{session.stats.tokens_in} tokens in, {session.stats.tokens_out} out, slots "
          f"{c.occupied()}/{c.budget}, {c.evictions} evicted]", file=sys.stderr)
    return 0


def _stdin_lines():  # noqa: ANN202 - a generator of str
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stderr.write("> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            return
        if line.strip():
            yield line.strip()


def _bench_stream(args: argparse.Namespace) -> int:
    from edgekv.runtime.stream_app import stream_session
    from edgekv.tools.stream_bench import BenchOptions, run_bench

    session = stream_session(_open_session(args))
    options = BenchOptions(frames=args.frames, ask_every=args.ask_every,
                           max_new_tokens=args.max_new_tokens, size=args.size)
    report = run_bench(session, options, policy=args.policy)
    print(report.to_json() if args.json else "\n".join(report.lines()))
    return 0 if report.passed() else 1


def _seed(text: str) -> int:
    """--seed: a non-negative integer (numpy's generators take no other)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, not {text!r}")
    return value


def _writable(path: str | None, flag: str) -> None:
    """A file the command will write at its end: its folder must exist now, not after the
    work (a result written nowhere is lost)."""
    if path and not Path(path).resolve().parent.is_dir():
        raise EdgeKVError(f"{flag} {path}: the folder {Path(path).parent} does not exist")


def _bench_needle(args: argparse.Namespace) -> int:
    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.session import Session
    from edgekv.tools import needle

    width, _, height = args.size.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise EdgeKVError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 64x48")
    options = needle.NeedleOptions(
        gaps=int_list(args.gaps, "--gaps"), lead=args.lead, trials=args.trials,
        policies=tuple(p for p in args.policies.split(",") if p and p != "full"),
        budgets=int_list(args.budgets, "--budgets"), size=(int(width), int(height)),
        seed=args.seed)
    options.check()

    def opener(bundle: Bundle):  # noqa: ANN202 - returns a session factory
        return lambda policy, budget: Session.open(bundle, policy, backend=args.backend,
                                                   budget=budget, threads=args.threads)

    bundle = Bundle.open(args.bundle)
    full = Bundle.open(args.full_bundle) if args.full_bundle else None
    cells = needle.run(opener(bundle), options,
                       opener(full) if full else None, full.manifest.budget if full else 0,
                       say=needle.say_stderr if not args.quiet else lambda _line: None)
    print(needle.to_json(cells, options) if args.json else "\n".join(needle.table(cells,
                                                                                  options)))
    return 0


def _eval_ppl(args: argparse.Namespace) -> int:
    from edgekv.tools.ppl import read_tokens, report, run_hf_baseline, streaming_ppl

    if args.tokens < 2 or args.window < 1:
        raise EdgeKVError(f"--tokens must be at least 2 and --window at least 1, not "
                          f"{args.tokens} and {args.window}")
    if args.hf_tokens is not None and args.hf_tokens < 2:
        raise EdgeKVError(f"--hf-tokens must be at least 2, not {args.hf_tokens}")
    if args.hf:
        from edgekv.export.loading import resolve

        resolve(args.hf)  # an unknown model fails now, not after the edgekv pass
    session = _open_session(args)
    ids = read_tokens(session, args.text, args.tokens)
    result = streaming_ppl(session, ids, window=args.window, progress=not args.quiet)
    hf_tokens = min(args.hf_tokens if args.hf_tokens is not None else args.tokens, args.tokens)
    hf = run_hf_baseline(args.hf, args.text, hf_tokens, args.window) if args.hf else None
    if args.json:
        print(json.dumps({**result.to_dict(), **({"hf": hf} if hf else {})}))
    else:
        print(report(result, hf))
    return 0


def _eval_scenes(args: argparse.Namespace) -> int:
    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.session import Session
    from edgekv.tools.scene_eval import evaluate

    bundle = Bundle.open(args.bundle)
    if bundle.manifest.vision is None:
        raise EdgeKVError(f"{args.bundle} has no vision graph: eval scenes needs a vision bundle")
    if args.examples < 1:
        raise EdgeKVError("--examples must be at least 1")
    session = Session.open(bundle, "full", backend=args.backend, threads=args.threads)
    score = evaluate(session, args.examples, args.seed, say=_say)
    if args.mistakes:
        _print_lines([f"{q!r}: truth {t!r}, said {a!r}" for q, t, a in score.mistakes],
                     sys.stdout)
    _print_lines(score.lines(), sys.stdout)
    return 0


def _eval_quality(args: argparse.Namespace) -> int:
    from edgekv.tools.quality import quality_table

    if args.tokens < 2 or args.full_tokens < 2:
        raise EdgeKVError(f"--tokens and --full-tokens must be at least 2, not {args.tokens} "
                          f"and {args.full_tokens}")
    table = quality_table(args.bundle, args.text, args.tokens,
                          list(int_list(args.budgets, "--budgets")),
                          [p for p in args.policies.split(",") if p],
                          args.full_bundle, args.full_tokens, args.threads)
    print(json.dumps(table.to_dict()) if args.json else table.render())
    return 0


def _verify(args: argparse.Namespace) -> int:
    from edgekv.export.loading import load, resolve
    from edgekv.export.manifest import load_manifest
    from edgekv.export.validate import hf_logits, max_diff
    from edgekv.export.vlm_loading import is_vision_language, load_vision_language
    from edgekv.runtime.utf8 import valid_utf8

    manifest = load_manifest(args.bundle)
    if args.prompt is not None and not args.prompt.strip():
        raise EdgeKVError("--prompt is empty: there is nothing to compare")
    if args.prompt is not None:
        args.prompt = valid_utf8(args.prompt)  # bytes argv could not decode: HF refuses them
    if args.image:
        return _verify_image(args, manifest)
    args.prompt = args.prompt or VERIFY_PROMPT
    source = resolve(args.against)
    if is_vision_language(source):  # a multimodal bundle's text path, against the whole model
        vlm = load_vision_language(source)
        model, tokenizer = vlm.model, vlm.tokenizer
    else:
        model, tokenizer = load(source)
    vocab = model.get_input_embeddings().weight.shape[0]
    if vocab != manifest.dims.vocab_size:
        raise EdgeKVError(f"{args.bundle} was not exported from {args.against}: its vocabulary "
                          f"has {manifest.dims.vocab_size} tokens, the model's {vocab}")
    ids = tokenizer(args.prompt).input_ids[: manifest.budget]
    if not ids:  # a tokenizer without byte fallback drops what its vocabulary lacks
        raise EdgeKVError(f"--prompt {args.prompt!r} encodes to no tokens with this model's "
                          "tokenizer: there is nothing to compare")
    reference = hf_logits(model, ids)
    diff = max_diff(args.bundle, ids, reference, backend=args.backend)
    return _verified(args, manifest, diff, reference, {"tokens": len(ids)})


def _verified(args: argparse.Namespace, manifest: Any, diff: float, reference: Any,
              report: dict[str, int]) -> int:
    """Print a comparison with HF against its limit; the exit status: 0 pass, 1 fail."""
    from edgekv.export.validate import hf_limit

    limit = args.tolerance if args.tolerance is not None else hf_limit(manifest, reference)
    passed = diff <= limit
    if args.json:
        print(json.dumps({"max_abs_logit_diff": diff, **report, "limit": limit,
                          "passed": passed}))
    else:
        pictures = f" ({report['images']} image(s))" if "images" in report else ""
        print(f"max_abs_logit_diff {diff:.3e} over {report['tokens']} tokens{pictures}: "
              f"{'PASS' if passed else 'FAIL'} (limit {limit:.1e})")
    return 0 if passed else 1


def _verify_image(args: argparse.Namespace, manifest: object) -> int:
    import numpy as np

    from edgekv.export.loading import resolve
    from edgekv.export.validate_vlm import QUESTION, both_logits
    from edgekv.export.vlm_loading import is_vision_language, load_vision_language
    from edgekv.runtime.preprocess import load_image

    if manifest.vision is None:  # type: ignore[attr-defined]
        raise EdgeKVError(f"{args.bundle} is a text-only bundle; --image needs a multimodal one")
    images = [load_image(path) for path in args.image]
    source = resolve(args.against)
    if not is_vision_language(source):
        raise EdgeKVError(f"{args.against} is not a vision-language model")
    ours, reference = both_logits(args.bundle, load_vision_language(source), images,
                                  args.backend, args.prompt or QUESTION)
    return _verified(args, manifest, float(np.abs(ours - reference).max()), reference,
                     {"tokens": len(ours), "images": len(images)})


def _policies(args: argparse.Namespace) -> int:
    from edgekv.runtime.policies import POLICIES

    for name, cls in POLICIES.items():
        params = ", ".join(f"{k}={v}" for k, v in cls().params().items()) or "-"
        print(f"{name:<12} {cls.summary}\n{'':<12} parameters: {params}")
    print("compose two as PREFILL+DECODE (e.g. structured+h2o): the first for prompts and "
          "frames, the second for the answer's tokens")
    return 0


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


def _bench(args: argparse.Namespace) -> int:
    from edgekv.tools.bench.command import run

    return run(args)


def _add_session_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory made by edgekv export")
    p.add_argument("--policy", default="streaming", help="NAME or NAME:key=value,...")
    p.add_argument("--backend", default="auto",
                   help="auto | trt | ort-gpu | ort | torch | torch-device")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")


def _add_stream_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "streaming (--source; then --prompt is the system message and stdin lines are "
        "questions asked while the stream runs)")
    g.add_argument("--source", default=None, metavar="SRC",
                   help="camera:N | gst:PIPELINE | rtsp://... | VIDEO_FILE | IMAGE_DIR | "
                   "synthetic[:k=v,...] | env:VAR (the spec is in $VAR)")
    g.add_argument("--fps", type=float, default=None, help="keep F frames per stream second")
    g.add_argument("--max-frames", type=int, default=None, help="stop after N frames fed")
    g.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds of stream time")
    g.add_argument("--ask", action="append", default=[], metavar="QUESTION",
                   help="ask this --every period (or once at the end); repeatable")
    g.add_argument("--every", default=None, metavar="10s|30f",
                   help="period of --ask in stream seconds (s, ms, m) or frames (f)")
    g.add_argument("--transcript", default=None, metavar="OUT.jsonl",
                   help="append one JSON record per answer, flushed as it ends")
    g.add_argument("--no-status", action="store_true", help="no live status line on stderr")


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line like every other error; --help has the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgekv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("run", help="answer --prompt, or chat on stdin; or watch a --source")
    _add_session_args(p)
    p.add_argument("--prompt", default=None)
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="picture(s) for the first question (multimodal bundles)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end an answer where TEXT appears (not shown; repeat for several)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--memory-log", default=None, help="sample memory during the run; JSON here")
    p.add_argument("--budget", type=int, default=None, help="lower the bundle's budget")
    _add_stream_args(p)
    p.set_defaults(func=_run)

    p = sub.add_parser("bench-stream", help="RSS, frames/s and answer latency over a long "
                       "synthetic stream (fixed-memory check)")
    _add_session_args(p)
    p.add_argument("--budget", type=int, default=None,
                   help="KV slots (default: the bundle's; at most the bundle's)")
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--ask-every", type=int, default=1_000, help="frames between questions")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--size", default="64x48", help="synthetic frame size WxH")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bench_stream)

    p = sub.add_parser("bench-needle", help="needle in a stream: recall of one distinctive "
                       "frame by policy, budget and distance (vision bundles)")
    p.add_argument("bundle", help="bundle directory made by edgekv export (a vision model)")
    p.add_argument("--full-bundle", default=None,
                   help="a bundle large enough to hold the whole stream: adds the 'full' row")
    p.add_argument("--policies", default="window,streaming,h2o,inf-mllm,structured")
    p.add_argument("--budgets", default="512", help="comma-separated KV budgets")
    p.add_argument("--gaps", default="1,25,100", help="frames between needle and question")
    p.add_argument("--lead", type=int, default=10, help="frames before the needle")
    p.add_argument("--trials", type=int, default=6, help="streams per cell (seeded)")
    p.add_argument("--size", default="320x240", help="synthetic frame size WxH")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no per-stream lines on stderr")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bench_needle)

    p = sub.add_parser("eval", help="evaluations")
    ev = p.add_subparsers(dest="evaluation", required=True)
    p = ev.add_parser("ppl", help="streaming perplexity of a text under a policy")
    _add_session_args(p)
    p.add_argument("--text", required=True)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--budget", type=int, default=None, help="lower the bundle's budget")
    p.add_argument("--window", type=int, default=4096, help="report perplexity per window")
    p.add_argument("--hf", metavar="MODEL", default=None,
                   help="also run HF transformers with a full cache on the same text")
    p.add_argument("--hf-tokens", type=int, default=None,
                   help="stop the HF baseline after this many tokens (default: --tokens; its "
                        "cost grows as n^2)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_eval_ppl)

    p = ev.add_parser("quality", help="perplexity of policies x budgets on one long text")
    p.add_argument("bundle", help="bundle whose budget is at least the largest --budgets")
    p.add_argument("--text", required=True)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--budgets", default="256,512,1024")
    p.add_argument("--policies", default="window,streaming,h2o,snapkv,inf-mllm,structured")
    p.add_argument("--full-bundle", default=None, help="bundle big enough for --full-tokens")
    p.add_argument("--full-tokens", type=int, default=8192)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_eval_quality)

    p = ev.add_parser("scenes", help="accuracy on held-out synthetic scenes (one frame, one "
                      "question each, full cache): smolvlm-synthetic's acceptance check")
    p.add_argument("bundle", help="a vision bundle (e.g. exported from smolvlm-synthetic)")
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--seed", type=_seed, default=7, help="scene seed (training used 0 and 1)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--mistakes", action="store_true", help="list the wrong answers")
    p.set_defaults(func=_eval_scenes)

    p = sub.add_parser("verify", help="compare a bundle with its original model")
    p.add_argument("bundle")
    p.add_argument("--against", required=True, help="the model the bundle came from")
    p.add_argument("--prompt", default=None,
                   help=f"the text compared (default: {VERIFY_PROMPT!r}); with --image, the "
                        "question after the pictures")
    p.add_argument("--backend", default="ort")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest |logit diff| that passes (default: the bundle's dtype "
                        "tolerance, or the drift export allows int4 and int8-cache bundles)")
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="compare an image + question prompt (repeat for several images)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_verify)

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

    p = sub.add_parser("bench", help="edgekv beside HF, onnxruntime-genai, llama.cpp, optimum")
    from edgekv.tools.bench.command import add_arguments as add_bench_arguments

    add_bench_arguments(p)
    p.set_defaults(func=_bench)

    p = sub.add_parser("policies", help="list KV policies and their parameters")
    p.set_defaults(func=_policies)
    return parser


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  line: str | None = None) -> str:
    """A library warning as the CLI says things: one line, no source location."""
    return f"edgekv: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    formatter, warnings.formatwarning = warnings.formatwarning, _warning_line
    try:
        return args.func(args)
    except EdgeKVError as exc:
        print(f"edgekv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgekv: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatter


if __name__ == "__main__":
    sys.exit(main())
