"""The `edgekv` command: a thin layer over the library. Errors become one line and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from edgekv.runtime.errors import EdgeKVError

Handler = Callable[[argparse.Namespace], int]


def _export(args: argparse.Namespace) -> int:
    from edgekv.export.exporter import ExportOptions, export

    options = ExportOptions(budget=args.budget, chunk=args.chunk, dtype=args.dtype,
                            position_mode=args.position_mode, opset=args.opset,
                            tolerance=args.tolerance, validate=not args.no_validate,
                            force=args.force, image_size=_pair(args.image_size, "--image-size"),
                            frames_per_call=args.frames_per_call,
                            tiling=_tiling(args.tiling))
    manifest = export(args.model, args.out, options)
    _print_plan(_plan_of(manifest))
    return 0


def _plan_of(manifest: object):  # noqa: ANN202 - MemoryPlan, imported lazily
    from edgekv.profiles.planner import plan

    m = manifest
    vision = m.vision.weights_bytes if m.vision is not None else 0  # type: ignore[attr-defined]
    return plan(m.dims, m.budget, m.chunk, m.dtype, vision=vision)  # type: ignore[attr-defined]


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


def _print_plan(memory_plan: object) -> None:
    for name, value in memory_plan.rows():  # type: ignore[attr-defined]
        print(f"  {name:<12} {value / 2**20:>10.1f} MiB")


def _info(args: argparse.Namespace) -> int:
    from edgekv.export.manifest import load_manifest

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
    if m.validation:
        print(f"validated   max |logit diff| {m.validation['max_abs_logit_diff']:.2e} vs HF")
    print("memory plan")
    _print_plan(_plan_of(m))
    return 0


def _open_session(args: argparse.Namespace):  # noqa: ANN202 - Session, imported lazily
    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.session import Session

    bundle = Bundle.open(args.bundle)
    return Session.open(bundle, policy=args.policy, backend=args.backend,
                        budget=getattr(args, "budget", None), threads=args.threads)


def _run(args: argparse.Namespace) -> int:
    from edgekv.runtime.sampler import Sampler

    session = _open_session(args)
    sampler = Sampler(temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    if args.system:
        session.messages.append({"role": "system",
                                 "content": session.message_content(args.system)})
    for image in args.image:
        session.append_image(image)
    questions = [args.prompt] if args.prompt else _stdin_lines()
    try:
        for question in questions:
            for piece in session.ask(question, args.max_new_tokens, sampler):
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


def _eval_ppl(args: argparse.Namespace) -> int:
    from edgekv.tools.ppl import read_tokens, report, run_hf_baseline, streaming_ppl

    session = _open_session(args)
    ids = read_tokens(session, args.text, args.tokens)
    result = streaming_ppl(session, ids, window=args.window, progress=not args.quiet)
    hf = run_hf_baseline(args.hf, args.text, args.tokens, args.window) if args.hf else None
    if args.json:
        print(json.dumps({**result.to_dict(), **({"hf": hf} if hf else {})}))
    else:
        print(report(result, hf))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from edgekv.export.loading import load, resolve
    from edgekv.export.manifest import load_manifest
    from edgekv.export.validate import compare

    manifest = load_manifest(args.bundle)
    if args.image:
        return _verify_image(args, manifest)
    model, tokenizer = load(resolve(args.against))
    ids = tokenizer(args.prompt).input_ids[: manifest.budget]
    diff = compare(args.bundle, model, ids, backend=args.backend)
    if args.json:
        print(json.dumps({"max_abs_logit_diff": diff, "tokens": len(ids)}))
    else:
        print(f"max_abs_logit_diff {diff:.3e} over {len(ids)} tokens")
    return 0


def _verify_image(args: argparse.Namespace, manifest: object) -> int:
    from edgekv.export.loading import resolve
    from edgekv.export.validate_vlm import compare
    from edgekv.export.vlm_loading import is_vision_language, load_vision_language
    from edgekv.runtime.preprocess import load_image

    if manifest.vision is None:  # type: ignore[attr-defined]
        raise EdgeKVError(f"{args.bundle} is a text-only bundle; --image needs a multimodal one")
    images = [load_image(path) for path in args.image]
    source = resolve(args.against)
    if not is_vision_language(source):
        raise EdgeKVError(f"{args.against} is not a vision-language model")
    diff, tokens = compare(args.bundle, load_vision_language(source), images, args.backend)
    if args.json:
        print(json.dumps({"max_abs_logit_diff": diff, "tokens": tokens, "images": len(images)}))
    else:
        print(f"max_abs_logit_diff {diff:.3e} over {tokens} tokens ({len(images)} image(s))")
    return 0


def _policies(args: argparse.Namespace) -> int:
    from edgekv.runtime.policies import POLICIES

    for name, cls in POLICIES.items():
        params = ", ".join(f"{k}={v}" for k, v in cls().params().items()) or "-"
        print(f"{name:<12} {cls.summary}\n{'':<12} parameters: {params}")
    return 0


def _add_session_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory made by edgekv export")
    p.add_argument("--policy", default="streaming", help="NAME or NAME:key=value,...")
    p.add_argument("--backend", default="auto", help="auto | ort | torch")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgekv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="export a model to a bundle")
    p.add_argument("model", help="HF model directory, .gguf file, or built-in name (smollm2-135m)")
    p.add_argument("--out", required=True)
    p.add_argument("--budget", type=int, default=2048, help="KV slots, fixed in the graph")
    p.add_argument("--chunk", type=int, default=64, help="largest chunk per decoder call")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--position-mode", default="cache", choices=["cache", "absolute"])
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
    p.set_defaults(func=_info)

    p = sub.add_parser("run", help="answer --prompt, or chat on stdin")
    _add_session_args(p)
    p.add_argument("--prompt", default=None)
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="picture(s) for the first question (multimodal bundles)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)

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
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_eval_ppl)

    p = sub.add_parser("verify", help="compare a bundle with its original model")
    p.add_argument("bundle")
    p.add_argument("--against", required=True, help="the model the bundle came from")
    p.add_argument("--prompt", default="The capital of France is Paris, and the capital of")
    p.add_argument("--backend", default="ort")
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="compare an image + question prompt (repeat for several images)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_verify)

    p = sub.add_parser("policies", help="list KV policies and their parameters")
    p.set_defaults(func=_policies)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgeKVError as exc:
        print(f"edgekv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgekv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
