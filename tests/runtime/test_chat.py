"""Multi-turn chat: the model sees exactly the chat template's text, turn after turn."""

from edgekv.runtime.bundle import Bundle
from edgekv.runtime.session import Session


def test_turns_feed_the_rendered_conversation_once(tiny_bundle):
    session = Session.open(Bundle.open(tiny_bundle()), policy="streaming")
    text = session.bundle.text
    seen = ""
    original_feed = session.feed

    def recording_feed(ids, **kw):
        nonlocal seen
        seen += text.decode(list(ids), skip_special_tokens=False)
        return original_feed(ids, **kw)

    session.feed = recording_feed
    history = [{"role": "system", "content": "You watch a camera."}]
    session.messages = list(history)
    for question in ["What do you see?", "And now?", "Anything red?"]:
        produced = []
        original_generate = session.generate

        def recording_generate(*a, _g=original_generate, _p=produced, **kw):
            for token in _g(*a, **kw):
                _p.append(token)
                yield token

        session.generate = recording_generate
        answer = "".join(session.ask(question, max_new_tokens=6))
        seen += text.decode(produced, skip_special_tokens=False)
        history += [{"role": "user", "content": question},
                    {"role": "assistant", "content": text.decode(produced)}]
        assert answer == text.decode(produced)
    expected = text.render(history, add_generation_prompt=False)
    assert expected.startswith(seen)
    assert len(expected) - len(seen) <= len("<|im_end|>\n")
    assert len(session.messages) == 3  # system + the last exchange: bounded history


def test_a_turn_longer_than_the_budget_is_refused_and_changes_nothing(tiny_bundle):
    import pytest

    from edgekv.runtime.errors import BudgetError

    session = Session.open(Bundle.open(tiny_bundle()), policy="streaming")
    first = "".join(session.ask("What do you see?", max_new_tokens=4))
    before = (list(session.messages), session._fed_text, session.stats.tokens_in,
              session.cache.occupied())
    long_question = "Tell me about the ball at Netherfield and who danced with whom. " * 20
    with pytest.raises(BudgetError, match="tokens and the cache has 92 slots for it"):
        "".join(session.ask(long_question, max_new_tokens=4))
    assert (list(session.messages), session._fed_text, session.stats.tokens_in,
            session.cache.occupied()) == before
    assert first and "".join(session.ask("And now?", max_new_tokens=4)) is not None


def _without_template(bundle_dir, tmp_path):
    """A copy of the bundle whose tokenizer has no chat template (a base model's)."""
    import json
    import shutil

    out = tmp_path / "no-template"
    shutil.copytree(bundle_dir, out)
    raw = json.loads((out / "manifest.json").read_text())
    raw["tokenizer"]["chat_template"] = None
    (out / "manifest.json").write_text(json.dumps(raw))
    return out


def test_without_a_template_each_answer_is_fed_once(tiny_bundle, tmp_path):
    session = Session.open(Bundle.open(_without_template(tiny_bundle(), tmp_path)),
                           policy="streaming")
    text = session.bundle.text
    fed: list[int] = []
    original_feed, original_generate = session.feed, session.generate

    def recording_feed(ids, **kw):
        fed.extend(int(i) for i in ids)
        return original_feed(ids, **kw)

    def recording_generate(*a, **kw):
        for token in original_generate(*a, **kw):
            fed.append(token)
            yield token

    session.feed, session.generate = recording_feed, recording_generate
    history = []
    for question in ["What do you see?", "And now?", "Anything red?"]:
        answer = "".join(session.ask(question, max_new_tokens=6))
        history += [{"role": "user", "content": question},
                    {"role": "assistant", "content": answer}]
    seen = text.decode(fed, skip_special_tokens=False)
    expected = text.render(history, add_generation_prompt=False)
    # the answer came from the model after "assistant:"; the next turn must not feed it again
    assert expected.startswith(seen) and len(expected) - len(seen) <= 1, (seen, expected)


def test_a_question_with_bytes_stdin_could_not_decode_is_asked(tiny_bundle):
    # Python hands undecodable stdin bytes over as lone surrogates ("caf\udce9" for Latin-1)
    session = Session.open(Bundle.open(tiny_bundle()), policy="streaming")
    "".join(session.ask("caf\udce9 au lait?", max_new_tokens=2))
    assert session.messages[-2]["content"] == "caf\udce9 au lait?"
    assert session.stats.tokens_out == 2


def test_the_printed_answer_is_the_kept_answer_to_its_last_byte(tiny_bundle):
    session = Session.open(Bundle.open(tiny_bundle()), policy="streaming")
    text = session.bundle.text
    # "hi" then the first byte of a two-byte character (0xC3, "Ã" in byte-level BPE): the
    # answer ends in U+FFFD, which streaming holds back while more bytes could complete it
    tokens = [*text.encode("hi"), text.tokenizer.token_to_id("Ã")]

    def canned(*_a, **_kw):
        yield from tokens

    session.generate = canned
    printed = "".join(session.ask("Say hi.", max_new_tokens=len(tokens)))
    assert printed == session.messages[-1]["content"] == "hi\ufffd"


def test_an_answer_ends_before_its_first_stop_string_which_is_never_shown(tiny_bundle):
    from edgekv.runtime.sampler import Sampler

    bundle = Bundle.open(tiny_bundle())

    def answer(**stop):  # the random tiny model says something varied when sampled
        session = Session.open(bundle, policy="streaming")
        pieces = list(session.ask("hello there", 24, Sampler(temperature=1.0, seed=0), **stop))
        return session, pieces

    free = "".join(answer()[1])
    stop = free[10:14]
    assert len(free) > 20 and stop.isprintable() and free.find(stop) == 10, free
    session, pieces = answer(stop=("never appears", stop))
    assert "".join(pieces) == free[:10]
    assert session.messages[-1]["content"] == free[:10]  # the kept answer is the one shown
    assert not any(stop[0] in piece for piece in pieces)  # its start was held, not shown
