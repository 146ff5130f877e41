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
