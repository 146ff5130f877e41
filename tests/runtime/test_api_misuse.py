"""Misused and interrupted library calls: a clear error, and the session exactly as before; an
answer whose reader stops early leaves a conversation the next question can follow."""

from __future__ import annotations

import numpy as np
import pytest

from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import SettingError
from edgekv.runtime.sampler import Sampler
from edgekv.runtime.session import Session


def _state(session: Session) -> tuple:
    """Everything a refused call must leave as it was: the conversation and the cache."""
    c = session.cache
    return (repr(session.messages), session._fed_text, session.pos, session.stats.tokens_in,
            c.keys.tobytes(), c.values.tobytes(), c.orig_pos.tobytes(), c.evictions)


@pytest.fixture(scope="module")
def bundle(tiny_bundle) -> Bundle:
    return Bundle.open(tiny_bundle())


@pytest.fixture
def full_session(bundle: Bundle) -> Session:
    """A session whose cache is full: the next step would make the policy evict."""
    session = Session.open(bundle, policy="streaming")
    session.feed(np.arange(3, 3 + bundle.manifest.budget) % 500)
    assert session.cache.occupied() == session.cache.budget
    return session


@pytest.mark.parametrize(("ids", "error", "message"), [
    (np.array([5.7, 6.2]), TypeError, "token ids must be integers, not float64"),
    ([5, -1], ValueError, "token id -1 is outside the vocabulary"),
    ([*range(20), 512], ValueError, "token id 512 is outside the vocabulary"),  # in chunk 2
    (np.array([[5, 6], [7, 8]]), ValueError, "token ids must be a 1-D sequence"),
    (None, ValueError, "token ids must be a 1-D sequence"),
    (np.array([True, False]), TypeError, "token ids must be integers, not bool"),
])
def test_feed_refuses_what_is_not_token_ids_and_feeds_none_of_it(full_session, ids, error,
                                                                  message):
    before = _state(full_session)
    with pytest.raises(error, match=message):
        full_session.feed(ids)
    assert _state(full_session) == before


@pytest.mark.parametrize(("shape", "dtype", "error", "message"), [
    ((1, 3, 65), np.float32, ValueError, r"embeddings must be \[1, c, 64\]"),
    ((3, 64), np.float32, ValueError, r"not \[3, 64\]"),
    ((2, 3, 64), np.float32, ValueError, r"not \[2, 3, 64\]"),
    ((1, 0, 64), np.float32, ValueError, "with c from 1"),
    ((1, 17, 64), np.float32, ValueError, "chunk 16"),
    ((1, 3, 64), np.int64, TypeError, "must be a float numpy array"),
])
def test_step_refuses_embeddings_the_graph_cannot_take_before_evicting(full_session, shape,
                                                                       dtype, error, message):
    before = _state(full_session)
    with pytest.raises(error, match=message):
        full_session.step(np.zeros(shape, dtype))
    assert _state(full_session) == before


def test_step_takes_float64_embeddings_as_the_tables_dtype(bundle):
    ids = np.array([5, 6, 7])
    wide, narrow = Session.open(bundle), Session.open(bundle)
    logits = wide.step(bundle.embed(ids).astype(np.float64))
    assert np.array_equal(logits, narrow.step(bundle.embed(ids)))


@pytest.mark.parametrize(("args", "error", "message"), [
    ((None, 3), TypeError, "the question must be a str, not NoneType"),
    ((b"hi", 3), TypeError, "the question must be a str, not bytes"),
    (("hi", -1), SettingError, "max_new_tokens must be a whole number >= 0, not -1"),
    (("hi", 2.5), SettingError, "max_new_tokens must be a whole number >= 0, not 2.5"),
    (("hi", 3, "greedy"), TypeError, "sampler must be a Sampler"),
    (("hi", 3, None, "User:"), TypeError, r"stop must be a tuple of strings, e.g. \('User:',\)"),
    (("hi", 3, None, ("",)), SettingError, "stop strings must be non-empty"),
])
def test_ask_refuses_bad_arguments_at_the_call_before_the_question_is_fed(bundle, args, error,
                                                                          message):
    session = Session.open(bundle)
    "".join(session.ask("hello", 2))
    before = _state(session)
    with pytest.raises(error, match=message):
        session.ask(*args)
    assert _state(session) == before


def test_no_stop_strings_may_be_given_as_none_and_no_new_tokens_as_zero(bundle):
    session = Session.open(bundle)
    assert list(session.ask("hi", 0, None, None)) == []
    assert [m["content"] for m in session.messages] == ["hi", ""]


def test_a_system_message_must_be_text(bundle):
    session = Session.open(bundle)
    with pytest.raises(TypeError, match="the system message must be a str, not NoneType"):
        session.add_system(None)
    assert session.pos == 0 and session.messages == []


def test_open_refuses_arguments_of_the_wrong_type(bundle):
    with pytest.raises(TypeError, match="policy must be a Policy or a spec string"):
        Session.open(bundle, policy=None)
    with pytest.raises(TypeError, match="budget must be a whole number of slots, not 40.5"):
        Session.open(bundle, budget=40.5)
    with pytest.raises(SettingError, match="--threads must be 0 .* not 1.5"):
        Session.open(bundle, threads=1.5)


class _Recorder:
    """Every token a session is fed, from `feed` and from `generate`."""

    def __init__(self, session: Session) -> None:
        self.fed: list[int] = []
        feed, generate = session.feed, session.generate

        def recording_feed(ids, **kw):
            self.fed.extend(int(i) for i in ids)
            return feed(ids, **kw)

        def recording_generate(*a, **kw):
            for token in generate(*a, **kw):
                self.fed.append(token)
                yield token

        session.feed, session.generate = recording_feed, recording_generate


def test_an_answer_closed_early_is_kept_as_far_as_the_model_went(bundle):
    session = Session.open(bundle)
    text = bundle.text
    seen = _Recorder(session)
    pieces = session.ask("What do you see?", 12, Sampler(temperature=1.0, seed=0))
    read = [next(pieces), next(pieces)]
    pieces.close()  # what a consumer's `break` or KeyboardInterrupt does
    cut = session.messages[-1]["content"]
    assert session.messages[0] == {"role": "user", "content": "What do you see?"}
    assert cut.startswith("".join(read)) and session.stats.tokens_out < 12
    second = "".join(session.ask("And now?", 4, Sampler(temperature=1.0, seed=1)))
    history = [{"role": "user", "content": "What do you see?"},
               {"role": "assistant", "content": cut},
               {"role": "user", "content": "And now?"},
               {"role": "assistant", "content": second}]
    # the model saw the conversation's text once, the cut answer closed by the template
    expected = text.render(history, add_generation_prompt=False)
    fed = text.decode(seen.fed, skip_special_tokens=False)
    assert expected.startswith(fed) and len(expected) - len(fed) <= len("<|im_end|>\n")


def test_a_cut_answer_leaves_the_session_of_an_answer_that_was_that_long(bundle):
    """Cut after n tokens, or limited to n: the same conversation, cache and next answer."""
    cut = Session.open(bundle)
    pieces = cut.ask("What do you see?", 12, Sampler(temperature=1.0, seed=0))
    next(pieces)
    pieces.close()
    limited = Session.open(bundle)
    "".join(limited.ask("What do you see?", cut.stats.tokens_out,
                        Sampler(temperature=1.0, seed=0)))
    assert _state(cut) == _state(limited)
    answers = ["".join(s.ask("And now?", 4, Sampler(temperature=1.0, seed=1)))
               for s in (cut, limited)]
    assert answers[0] == answers[1] and _state(cut) == _state(limited)


def test_an_exception_in_the_reading_loop_keeps_the_exchange(bundle):
    session = Session.open(bundle)
    with pytest.raises(KeyboardInterrupt):
        for _piece in session.ask("What do you see?", 8):
            raise KeyboardInterrupt
    assert [m["role"] for m in session.messages] == ["user", "assistant"]
    assert "".join(session.ask("And now?", 2)) is not None


def test_nothing_is_fed_or_asked_while_an_answer_is_open(bundle):
    session = Session.open(bundle)
    pieces = session.ask("What do you see?", 8)
    next(pieces)
    before = _state(session)
    for call in (lambda: session.ask("And now?", 2), lambda: session.feed([5, 6])):
        with pytest.raises(SettingError, match="an answer is still being streamed"):
            call()
        assert _state(session) == before
    pieces.close()
    assert "".join(session.ask("And now?", 2)) is not None


def test_an_answer_asked_before_the_session_moved_on_is_refused_when_read(bundle):
    session = Session.open(bundle)
    stale = session.ask("first?", 3)
    "".join(session.ask("second?", 3))
    before = _state(session)
    with pytest.raises(SettingError, match="asked before the session moved on"):
        next(stale)
    assert _state(session) == before


def test_a_question_interrupted_while_fed_is_finished_by_the_next_turn(bundle):
    session = Session.open(bundle, policy="streaming")
    fed: list[int] = []
    feed_step = session.step

    def step(embeds, **kw):  # the question's second chunk is interrupted (Ctrl-C)
        if fed.count("chunk") == 1:
            raise KeyboardInterrupt
        fed.append("chunk")
        return feed_step(embeds, **kw)

    first = "a question long enough to be fed in more than one chunk of sixteen tokens " * 2
    session.step = step
    with pytest.raises(KeyboardInterrupt):
        list(session.ask(first, 4))
    session.step = feed_step
    assert session.pos == session.chunk  # one chunk of it is in the cache...
    assert session.messages == [{"role": "user", "content": first}]  # ...and in the talk
    text = session.bundle.text
    before = text.decode(text.encode(session._fed_text), skip_special_tokens=False)
    ids = []
    session.feed = lambda new, **kw: ids.extend(new) or Session.feed(session, new, **kw)
    list(session.ask("and a second one", 2))
    # the next turn fed the rest of the first question, then the second: nothing twice
    rendered = text.render([{"role": "user", "content": first},
                            {"role": "user", "content": "and a second one"}],
                           add_generation_prompt=True)
    assert before + text.decode(ids, skip_special_tokens=False) == rendered


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_step_refuses_embeddings_that_are_not_finite_before_evicting(full_session, bad):
    before = _state(full_session)
    embeds = full_session.bundle.embed(np.array([5]))
    embeds[0, 0, 3] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        full_session.step(embeds)
    assert _state(full_session) == before
