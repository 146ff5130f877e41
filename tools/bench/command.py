"""`edgekv bench`: its arguments and what it does with them (cli.py only wires it in)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ALL_PEERS = "hf,ort_genai_fp32,ort_genai_int4,llama_cpp,optimum_ort"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="the bundle to measure (fp32)")
    p.add_argument("--int4-bundle", default=None, help="a quantized bundle to measure too")
    p.add_argument("--peers", default=ALL_PEERS,
                   help=f"comma-separated peers, or 'none' (default: {ALL_PEERS})")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--cache-dir", default="~/.cache/edgekv/bench",
                   help="the peers' venvs, models and logs (made once, reused)")
    p.add_argument("--quick", action="store_true", help="tiny workloads: a smoke test")
    p.add_argument("--prompt-tokens", type=int, default=None, help="prefill length (2048)")
    p.add_argument("--decode-tokens", type=int, default=None, help="greedy tokens (256)")
    p.add_argument("--long-tokens", type=int, default=None, help="long stream length (32768)")
    p.add_argument("--long-budgets", default=None, help="edgekv budgets for the long stream "
                   "(512,2048; each at most the bundle's)")
    p.add_argument("--no-long", action="store_true", help="skip the long stream")
    p.add_argument("--quality-tokens", type=int, default=None,
                   help="perplexity of every runner over the text's first N tokens, whole "
                   "context (2048; 0 skips it)")
    p.add_argument("--threads", type=int, default=None, help="threads of every runner (2)")
    p.add_argument("--rounds", type=int, default=None,
                   help="speed runs per runner, interleaved across runners; the median is "
                   "reported (1)")
    p.add_argument("--same-process-rounds", type=int, default=None,
                   help="rounds of edgekv's decode step alternated with onnxruntime-genai's graph "
                   "in one process, per precision (8; 0 skips it)")
    p.add_argument("--text", default=None, help="text the token ids are cut from")
    p.add_argument("--peer-model", default="smollm2-135m",
                   help="the GGUF model the peers run (the bundle should come from it)")


def options_from(args: argparse.Namespace):  # noqa: ANN201 - BenchOptions, imported lazily
    from edgekv.runtime.errors import EdgeKVError
    from edgekv.tools.bench.bench import BenchOptions
    from edgekv.tools.bench.workloads import QUICK, Workloads
    from edgekv.tools.int_list import int_list

    if args.rounds is not None and args.rounds < 1:
        raise EdgeKVError(f"--rounds must be at least 1, not {args.rounds}")
    if args.same_process_rounds is not None and args.same_process_rounds < 0:
        raise EdgeKVError(f"--same-process-rounds must be 0 or more, not "
                          f"{args.same_process_rounds}")
    w = QUICK if args.quick else Workloads()
    changes = {k: v for k, v in {"prompt_tokens": args.prompt_tokens,
                                 "decode_tokens": args.decode_tokens,
                                 "long_tokens": args.long_tokens, "threads": args.threads,
                                 "quality_tokens": args.quality_tokens,
                                 "rounds": args.rounds,
                                 "same_process_rounds": args.same_process_rounds}.items()
               if v is not None}
    counts = {"--prompt-tokens": args.prompt_tokens, "--decode-tokens": args.decode_tokens,
              "--threads": args.threads}
    for flag, value in counts.items():
        if value is not None and value < 1:
            raise EdgeKVError(f"{flag} must be at least 1, not {value}")
    if args.long_budgets:
        changes["long_budgets"] = int_list(args.long_budgets, "--long-budgets")
    w = dataclasses.replace(w, **changes)
    peers = [] if args.peers.strip() in ("", "none") else [
        p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in ALL_PEERS.split(",")]
    if unknown:
        raise EdgeKVError(f"--peers: unknown {', '.join(unknown)} (known: {ALL_PEERS}, or none)")
    if args.text and not Path(args.text).is_file():
        raise EdgeKVError(f"--text {args.text}: no such file")
    opts = BenchOptions(bundle=Path(args.bundle), peers=peers, workloads=w,
                        int4_bundle=Path(args.int4_bundle) if args.int4_bundle else None,
                        cache_dir=Path(args.cache_dir).expanduser(), peer_model=args.peer_model,
                        long=not args.no_long)
    if args.text:
        opts.text = Path(args.text)
    return opts


def run(args: argparse.Namespace) -> int:
    from edgekv.tools.bench.bench import run_bench
    from edgekv.tools.bench.report import render

    report = run_bench(options_from(args), log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(report) if args.json else render(report))
    return 0
