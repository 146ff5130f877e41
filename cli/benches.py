"""`edgekv bench / bench-stream / bench-needle`: speed, memory and recall measured."""

from __future__ import annotations

import argparse
from typing import Any

from edgekv.cli.common import add_session_args, open_session, seed_arg
from edgekv.runtime.errors import EdgeKVError
from edgekv.tools.int_list import int_list


def _bench(args: argparse.Namespace) -> int:
    from edgekv.tools.bench.command import run

    return run(args)


def _bench_stream(args: argparse.Namespace) -> int:
    from edgekv.runtime.stream_app import stream_session
    from edgekv.tools.stream_bench import BenchOptions, run_bench

    session = stream_session(open_session(args))
    options = BenchOptions(frames=args.frames, ask_every=args.ask_every,
                           max_new_tokens=args.max_new_tokens, size=args.size)
    report = run_bench(session, options, policy=args.policy)
    print(report.to_json() if args.json else "\n".join(report.lines()))
    return 0 if report.passed() else 1


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


def add_parsers(sub: Any) -> None:
    """This module's commands, on the `edgekv` parser's subcommands."""
    p = sub.add_parser("bench", help="edgekv beside HF, onnxruntime-genai, llama.cpp, optimum")
    from edgekv.tools.bench.command import add_arguments as add_bench_arguments

    add_bench_arguments(p)
    p.set_defaults(func=_bench)

    p = sub.add_parser("bench-stream", help="RSS, frames/s and answer latency over a long "
                       "synthetic stream (fixed-memory check)")
    add_session_args(p)
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
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no per-stream lines on stderr")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bench_needle)
