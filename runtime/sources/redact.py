"""Credentials in a URL (rtsp://user:password@host/...) never reach a log, a status line or a
transcript: every text the stream code shows goes through `redact`."""

from __future__ import annotations

import re

# scheme://userinfo@ : up to the last '@' before the path, so an unencoded '@' in a password
# (rtsp://admin:p@ss@host) is hidden whole.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s]+)@")


def redact(text: str) -> str:
    """`text` with the user:password of every URL in it replaced by ***."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}***@", text)
