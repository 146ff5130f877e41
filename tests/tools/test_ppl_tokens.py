"""`read_tokens` encodes a prefix of the text, and gets the same ids as encoding all of it."""

import pytest

from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import EdgeKVError
from edgekv.runtime.session import Session
from edgekv.tools.ppl import read_tokens
from helpers import TEXT_FILE


@pytest.mark.parametrize("n", [1, 100, 3000])
def test_prefix_encoding_equals_whole_text_encoding(n, tiny_bundle):
    session = Session.open(Bundle.open(tiny_bundle("llama")), backend="ort")
    whole = session.bundle.text.encode(TEXT_FILE.read_text(encoding="utf-8"))
    assert read_tokens(session, TEXT_FILE, n).tolist() == whole[:n]


def test_too_few_tokens_is_an_error(tmp_path, tiny_bundle):
    session = Session.open(Bundle.open(tiny_bundle("llama")), backend="ort")
    short = tmp_path / "short.txt"
    short.write_text("only a few words here")
    with pytest.raises(EdgeKVError, match="asks for more"):
        read_tokens(session, short, 1000)
