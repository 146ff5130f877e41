"""What the `edgekv` commands share: session arguments and opening, output lines, checks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from edgekv.runtime.errors import EdgeKVError


def print_lines(lines: list[str], stream: TextIO | None = None) -> None:
    print("\n".join(lines), file=stream or sys.stdout)


def say(line: str) -> None:
    print(f"edgekv: {line}", file=sys.stderr)


def open_session(args: argparse.Namespace):  # noqa: ANN202 - Session, imported lazily
    from edgekv.profiles.planner import bundle_plan
    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.session import Session
    from edgekv.tools import phases

    phases.mark("load")
    bundle = Bundle.open(args.bundle)
    m = bundle.manifest
    phases.record_plan(bundle_plan(m).rows())
    chosen = say if args.command == "run" else None  # `run` says which backend `auto` chose
    return Session.open(bundle, policy=args.policy, backend=args.backend,
                        budget=getattr(args, "budget", None), threads=args.threads, say=chosen)


def seed_arg(text: str) -> int:
    """--seed: a non-negative integer (numpy's generators take no other)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, not {text!r}")
    return value


def writable(path: str | None, flag: str) -> None:
    """A file the command will write at its end: its folder must exist now, not after the
    work (a result written nowhere is lost)."""
    if path and not Path(path).resolve().parent.is_dir():
        raise EdgeKVError(f"{flag} {path}: the folder {Path(path).parent} does not exist")


def add_session_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory made by edgekv export")
    p.add_argument("--policy", default="streaming", help="NAME or NAME:key=value,...")
    p.add_argument("--backend", default="auto",
                   help="auto | trt | ort-gpu | ort | torch | torch-device")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")


def add_stream_args(p: argparse.ArgumentParser) -> None:
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

