"""`edgekv run`: answer a prompt, chat on stdin, or watch a --source."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edgekv.cli.common import (
    add_session_args,
    add_stream_args,
    open_session,
    print_lines,
    seed_arg,
    writable,
)
from edgekv.runtime.errors import EdgeKVError


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
        writable(getattr(args, flag, None), "--" + flag.replace("_", "-"))
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
    session = open_session(args)
    frames_in = stream_session(session)
    system = args.prompt or args.system
    if system:  # a standing instruction: protected, so no stream length evicts it
        session.add_system(system)
    phases.mark("stream")  # for --memory-log / edgekv profile: loading ends, frames begin
    with StopOnSignal() as stopper:
        summary = run_stream(frames_in, source, config, sampler, stdin=sys.stdin,
                             stop=stopper.stop)
    summary.ended_by = stopper.signal_name or summary.ended_by
    print_lines([f"edgekv: {line}" for line in summary.lines()], sys.stderr)
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
    session = open_session(args)
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
          f"{c.occupied()}/{c.budget}, {c.evictions} evicted"
          f"{f', {c.merged} merged' if c.merged else ''}]", file=sys.stderr)
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


def add_parsers(sub: Any) -> None:
    """This module's commands, on the `edgekv` parser's subcommands."""
    p = sub.add_parser("run", help="answer --prompt, or chat on stdin; or watch a --source")
    add_session_args(p)
    p.add_argument("--prompt", default=None)
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="picture(s) for the first question (multimodal bundles)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end an answer where TEXT appears (not shown; repeat for several)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--memory-log", default=None, help="sample memory during the run; JSON here")
    p.add_argument("--budget", type=int, default=None, help="lower the bundle's budget")
    add_stream_args(p)
    p.set_defaults(func=_run)
