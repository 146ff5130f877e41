"""Run one peer script in a child process and read its one-line JSON answer.

Each measurement gets a fresh process, so its peak RSS is its own and nothing one runner
allocated (or leaked) is charged to the next. Any failure (an import error in a venv, a crash,
a time-out, output that is not JSON) becomes `{"error": "why"}`: one peer never stops the run.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def script(name: str) -> Path:
    return HERE / f"{name}.py"


def run_child(python: str | Path, script_path: Path, spec: dict[str, Any], log_path: Path,
              timeout_s: float | None = None, label: str = "") -> dict[str, Any]:
    """`python script_path SPEC.json`; its last stdout line is the result, its stderr goes to
    `log_path` (kept for a look when something fails)."""
    label = label or script_path.stem
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        spec_path = f.name
    try:
        with log_path.open("w") as log:
            proc = subprocess.run([str(python), str(script_path), spec_path],
                                  stdout=subprocess.PIPE, stderr=log, text=True,
                                  timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"{label}: no answer within {timeout_s:.0f} s (log: {log_path})"}
    except OSError as exc:
        return {"error": f"{label}: cannot start {python}: {exc}"}
    finally:
        Path(spec_path).unlink(missing_ok=True)
    result = _last_json_line(proc.stdout)
    if proc.returncode != 0 or result is None:
        why = _last_words(log_path.read_text(errors="replace"))
        return {"error": f"{label}: exit {proc.returncode}: {why} (log: {log_path})"}
    return result


def _last_json_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _last_words(stderr: str) -> str:
    """The line that says why: the last non-empty line of stderr (a traceback's last line)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"
