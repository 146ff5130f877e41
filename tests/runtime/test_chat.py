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
