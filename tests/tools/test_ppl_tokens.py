"""`read_tokens` encodes a prefix of the text, and gets the same ids as encoding all of it."""

import warnings

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


@pytest.mark.parametrize("content, pattern", [
    ("Café crème, naïve façade. ".encode("latin-1"), "is not UTF-8 text (byte 0xe9 at offset 3)"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "is not UTF-8 text (byte 0x89 at offset 0)"),
    ("plain words".encode("utf-16"), "is not UTF-8 text (byte 0xff at offset 0)"),
    (b"\x00" * 64, "holds NUL bytes: a binary file"),
], ids=["latin-1", "png", "utf-16", "nul"])
def test_a_file_that_is_not_utf8_text_is_refused_by_name(tmp_path, content, pattern):
    from edgekv.tools.ppl import read_text

    path = tmp_path / "input"
    path.write_bytes(content)
    with pytest.raises(EdgeKVError, match=pattern.replace("(", r"\(").replace(")", r"\)")):
        read_text(path)


def test_a_directory_is_not_called_missing(tmp_path):
    from edgekv.tools.ppl import read_text

    with pytest.raises(EdgeKVError, match="is a directory; --text takes a text file"):
        read_text(tmp_path)


def test_utf8_text_in_any_script_and_line_ending_is_read_as_is(tmp_path):
    from edgekv.tools.ppl import read_text

    text = "\ufeff日本語 😀 مرحبا שלום\r\nline two\r\n"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    assert read_text(path) == text  # the BOM stays, as the --hf baseline reads it


def test_windows_of_one_token_are_labelled_by_the_token_they_score(tiny_bundle):
    from edgekv.tools.ppl import report, streaming_ppl

    session = Session.open(Bundle.open(tiny_bundle("llama")), backend="ort")
    result = streaming_ppl(session, read_tokens(session, TEXT_FILE, 3), window=1,
                           progress=False)
    rows = [line.split()[0] for line in report(result).splitlines()[2:4]]
    assert rows == ["1-2", "2-3"]  # token 0 is never scored: no window [0, 1)


class _AsciiOnly:
    """A tokenizer without byte fallback: one id per ASCII character, the rest dropped."""

    def encode(self, text):
        return [ord(c) for c in text if ord(c) < 128]

    def decode(self, ids):
        return "".join(map(chr, ids))


def test_a_tokenizer_that_drops_most_of_the_text_is_warned_about():
    from types import SimpleNamespace

    from edgekv.tools.ppl import text_tokens

    session = SimpleNamespace(bundle=SimpleNamespace(text=_AsciiOnly()))
    with pytest.warns(UserWarning, match=r"kept 5 of the 23 characters of cjk\.txt"):
        ids = text_tokens(session, "日本語の文章, 日本語の文章, 日本語の文章, a b", 8, "cjk.txt")
    assert len(ids) == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # text it keeps whole: no warning
        text_tokens(session, "plain ascii text, kept whole", 8, "ascii.txt")
