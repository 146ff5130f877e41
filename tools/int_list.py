"""Comma-separated integers on the command line (`--budgets 512,2048`), shared by the CLI and
the benchmark's own argument handling."""

from __future__ import annotations

from edgekv.runtime.errors import EdgeKVError


def int_list(text: str, flag: str) -> tuple[int, ...]:
    """'512,2048' -> (512, 2048); anything else is the user's error, named by its flag."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise EdgeKVError(f"{flag}: expected comma-separated integers, not {text!r}") from None
