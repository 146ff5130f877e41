"""Text from argv and stdin as valid UTF-8.

Python hands undecodable argv and stdin bytes over as lone surrogates ('\\udcff', one per bad
byte, PEP 383). The tokenizer refuses them with a TypeError, and a UTF-8 file or a strict
stdout raises on them: one such question would end a chat or a stream.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_utf8(text: str) -> str:
    """`text` with each lone surrogate as U+FFFD, what a UTF-8 decoder shows for a bad byte."""
    return _SURROGATE.sub("\ufffd", text)
