"""The transcript of a streaming run: JSON Lines, one record per answer, appended and flushed
to disk (fsync) as each answer ends, so a run killed at any moment leaves only whole lines.
Every text in a record is redacted (no RTSP credentials, whatever the question quoted)."""

from __future__ import annotations

import errno
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgekv.runtime.sources.redact import redact
from edgekv.runtime.utf8 import valid_utf8


@dataclass
class AnswerRecord:
    frame: int  # frames fed to the model when the question was asked
    stream_t: float  # stream time of the last frame fed, seconds
    question: str
    answer: str
    tokens: int  # tokens generated
    latency_s: float  # question asked -> last token
    first_token_s: float | None  # question asked -> first piece of text
    origin: str  # "ask" (--ask), "stdin" (typed), "end" (--ask without --every)
    stopped: bool = False  # cut short by SIGINT/SIGTERM
    source: str = ""
    time: str = ""  # wall clock, ISO 8601 UTC, when the answer ended

    def to_json(self) -> str:
        record: dict[str, Any] = asdict(self)
        record["time"] = self.time or datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        for key, value in record.items():
            if isinstance(value, str):
                record[key] = redact(valid_utf8(value))
        return json.dumps(record, ensure_ascii=False)


class Transcript:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self.records = 0
        if not _ends_a_line(self.path):  # a file cut mid-line (killed elsewhere, disk full):
            self._file.write("\n")  # our first record must not be glued onto it

    def write(self, record: AnswerRecord) -> None:
        # One write of one whole line, then flush and fsync: a kill leaves whole lines only.
        self._file.write(record.to_json() + "\n")
        self._file.flush()
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:  # a pipe or terminal (--transcript /dev/stdout): nothing to sync
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
        self.records += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> Transcript:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_a_line(path: Path) -> bool:
    """Whether appending to `path` starts a new line (an empty file, a pipe or a device
    does)."""
    if not path.is_file():
        return True
    try:
        with path.open("rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except OSError:  # not readable (write-only): nothing to check, so append as it is
        return True
