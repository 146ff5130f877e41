"""The `edgekv` command: a thin layer over the library. Errors become one line and exit code 2.

One module per group of commands (bundles, run, evals, benches), each adding its subcommands
to the parser; what they share is in `common`."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from edgekv.cli import benches, bundles, evals, run
from edgekv.runtime.errors import EdgeKVError


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line like every other error; --help has the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgekv", description=__doc__.partition("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (bundles, run, evals, benches):
        group.add_parsers(sub)
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
    except BrokenPipeError:  # `edgekv policies | head`: the reader left; nothing is wrong
        # Python would print its own error flushing stdout at exit: point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        warnings.formatwarning = formatter
