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
    from edgekv.profiles.planner import plan

    options = ExportOptions(budget=args.budget, chunk=args.chunk, dtype=args.dtype,
                            position_mode=args.position_mode, opset=args.opset,
                            tolerance=args.tolerance, validate=not args.no_validate,
                            force=args.force)
    manifest = export(args.model, args.out, options)
    _print_plan(plan(manifest.dims, manifest.budget, manifest.chunk, manifest.dtype))
    return 0


def _print_plan(memory_plan: object) -> None:
    for name, value in memory_plan.rows():  # type: ignore[attr-defined]
        print(f"  {name:<12} {value / 2**20:>10.1f} MiB")


def _info(args: argparse.Namespace) -> int:
    from edgekv.export.manifest import load_manifest
    from edgekv.profiles.planner import plan

    m = load_manifest(args.bundle, verify=not args.no_verify)
    d = m.dims
    print(f"bundle      {args.bundle}")
    print(f"model       {m.model} ({m.family})")
    print(f"dims        {d.num_layers} layers, hidden {d.hidden_size}, {d.num_heads} heads, "
          f"{d.num_kv_heads} KV heads x {d.head_dim}, vocab {d.vocab_size}")
    print(f"contract    budget {m.budget} slots, chunk 1..{m.chunk}, {m.dtype}, "
          f"positions {m.position_mode}, opset {m.opset}")
    if m.validation:
        print(f"validated   max |logit diff| {m.validation['max_abs_logit_diff']:.2e} vs HF")
    print("memory plan")
    _print_plan(plan(d, m.budget, m.chunk, m.dtype))
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
        session.messages.append({"role": "system", "content": args.system})
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


def _eval_quality(args: argparse.Namespace) -> int:
    from edgekv.tools.quality import quality_table

    table = quality_table(args.bundle, args.text, args.tokens,
                          [int(b) for b in args.budgets.split(",")], args.policies.split(","),
                          args.full_bundle, args.full_tokens, args.threads)
    print(json.dumps(table.to_dict()) if args.json else table.render())
    return 0


def _verify(args: argparse.Namespace) -> int:
    from edgekv.export.loading import load, resolve
    from edgekv.export.manifest import load_manifest
    from edgekv.export.validate import compare

    manifest = load_manifest(args.bundle)
    model, tokenizer = load(resolve(args.against))
    ids = tokenizer(args.prompt).input_ids[: manifest.budget]
    diff = compare(args.bundle, model, ids, backend=args.backend)
    if args.json:
        print(json.dumps({"max_abs_logit_diff": diff, "tokens": len(ids)}))
    else:
        print(f"max_abs_logit_diff {diff:.3e} over {len(ids)} tokens")
    return 0


def _policies(args: argparse.Namespace) -> int:
    from edgekv.runtime.policies import POLICIES

    for name, cls in POLICIES.items():
        params = ", ".join(f"{k}={v}" for k, v in cls().params().items()) or "-"
        print(f"{name:<12} {cls.summary}\n{'':<12} parameters: {params}")
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
    p.set_defaults(func=_export)

    p = sub.add_parser("info", help="manifest summary and memory plan")
    p.add_argument("bundle")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
    p.set_defaults(func=_info)

    p = sub.add_parser("run", help="answer --prompt, or chat on stdin")
    _add_session_args(p)
    p.add_argument("--prompt", default=None)
    p.add_argument("--system", default=None, help="system message")
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

    p = sub.add_parser("verify", help="compare a bundle with its original model")
    p.add_argument("bundle")
    p.add_argument("--against", required=True, help="the model the bundle came from")
    p.add_argument("--prompt", default="The capital of France is Paris, and the capital of")
    p.add_argument("--backend", default="ort")
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
