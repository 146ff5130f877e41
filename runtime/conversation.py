"""A conversation over a session: chat turns through the bundle's template, and pictures.

Each turn is rendered with the template and only what differs from the text already fed is
fed, so the cache (under the policy) is the conversation's memory and the host keeps just the
system message and the last exchange. Session inherits these methods; they keep their state
in the session's `messages` and `_fed_text` (what snapshot.py saves), feed through its `feed`,
`feed_prompt` and `generate`, and ask its `room()` what one turn may take.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edgekv.runtime.errors import BudgetError, BundleError, SettingError, whole_number
from edgekv.runtime.sampler import Sampler

# Cut mark: rendering a turn with this text after its images shows what precedes the question.
_CUT = "\x00edgekv-cut\x00"


class Conversation:
    """The chat half of Session (a mixin: Session holds the state it reads)."""

    def add_system(self, text: str, protected: bool = True) -> None:
        """Open the conversation with a system message and feed it now. Protected (the
        default), its tokens are never evicted: a standing instruction ("tell me when a
        triangle appears") survives a stream of any length, at the cost of its slots."""
        if not isinstance(text, str):
            raise TypeError(f"the system message must be a str, not {type(text).__name__}")
        if self.messages or self.pos:
            raise ValueError("the system message must come before anything else is fed")
        system = {"role": "system", "content": self.message_content(text)}
        rendered = self.bundle.text.render([system], add_generation_prompt=False)
        ids = self.bundle.text.encode(rendered)
        if protected and len(ids) + self.chunk > self.cache.budget:
            raise BudgetError(f"the system message is {len(ids)} tokens: with a chunk of "
                              f"{self.chunk} it does not fit the budget {self.cache.budget} "
                              "as protected tokens")
        self.feed(ids, protected=protected)
        self.messages.append(system)
        self._fed_text = rendered

    def ask(
        self, question: str, max_new_tokens: int = 256, sampler: Sampler | None = None,
        stop: tuple[str, ...] = (),
    ) -> Iterator[str]:
        """Add a user turn, stream the answer as text pieces, and keep it in the conversation.

        Only the system message and the last exchange are kept as text: the template renders
        them to find what is new, and the cache (under the policy) is the conversation's
        memory. So hundreds of turns cost no more host memory than one. A turn longer than
        the cache's room raises BudgetError here, at the call, before anything is fed.
        The answer ends at the first of the `stop` strings, which is not part of it.
        An answer closed early (the consumer stops reading: `close()`, an exception in its
        loop, KeyboardInterrupt) is kept as far as it went, as the model said it.
        """
        self._refuse_while_answering()
        stop = _checked_answer_args(question, max_new_tokens, sampler, stop)
        text = self.bundle.text
        system = [m for m in self.messages[:1] if m["role"] == "system"]
        history, user = self._user_turn(question)
        rendered = text.render([*history, user], add_generation_prompt=True)
        common = _common_prefix(rendered, self._fed_text)
        ids = text.encode(rendered[common:])
        room = self.room()
        if len(ids) > room:  # refused before anything is fed: nothing changes
            raise BudgetError(
                f"this turn is {len(ids)} tokens and the cache has {room} slots for it "
                f"(budget {self.cache.budget}, less what it must keep): the model would answer "
                "without seeing its beginning. Ask a shorter question, stream long text in "
                "first (Session.feed; `edgekv eval ppl` for a file) and ask about it, or export "
                "with a larger --budget")
        turn = _Turn(ids, system, history, user, rendered[:common], self.pos)
        return self._reply(turn, max_new_tokens, sampler, stop)

    def _reply(self, turn: _Turn, max_new_tokens: int, sampler: Sampler | None,
               stop: tuple[str, ...]) -> Iterator[str]:
        """Feed the turn's `ids`, stream the answer, then keep the exchange (`ask`)."""
        ids, system, user = turn.ids, turn.system, turn.user
        # `ids` are what was new at the call: fed after anything else, they would be wrong
        if self.pos != turn.asked_at:
            raise SettingError("this answer was asked before the session moved on (another "
                               "question or picture was fed since): ask again")
        self._refuse_while_answering()
        text = self.bundle.text
        # rendered now, not in `finally`: a generator left open ends at interpreter exit, when
        # the template engine can no longer import what it compiles with
        prefix = text.render([*system, user], add_generation_prompt=True)
        try:
            last = self.feed(ids)
        except BaseException:  # KeyboardInterrupt between chunks: part of the turn is cached
            self._keep_partial_turn(turn)
            raise
        self._answering = True
        produced: list[int] = []  # every token here is in the cache (generate feeds, then yields)
        try:
            shown = ""
            for token in self.generate(last, max_new_tokens, sampler, stop):
                produced.append(token)
                now = _until_stop(text.decode(produced), stop, hold=True)
                if now.startswith(shown) and not now.endswith("\ufffd"):
                    yield now[len(shown) :]
                    shown = now
            whole = _until_stop(text.decode(produced), stop)
            if whole.startswith(shown) and whole != shown:  # a last piece held back as unfinished
                yield whole[len(shown) :]
        finally:
            # Also when the consumer stopped reading: the cache holds the question and the
            # tokens so far, so the conversation must too, or the next turn is rendered from
            # an older text and fed after an assistant turn that never closed.
            self._answering = False
            self._keep_exchange([*system, user], prefix, produced, stop)

    def _keep_exchange(self, asked: list[dict[str, Any]], prefix: str, produced: list[int],
                       stop: tuple[str, ...]) -> None:
        """The conversation after an answer of `produced` tokens to `asked` (system message
        and user turn), whose template text up to the answer is `prefix`."""
        text = self.bundle.text
        whole = _until_stop(text.decode(produced), stop)
        self.messages = [*asked, {"role": "assistant", "content": self.message_content(whole)}]
        self._fed_text = prefix + text.decode(produced, skip_special_tokens=False)

    def _keep_partial_turn(self, turn: _Turn) -> None:
        """The conversation after `turn` was fed in part: the question stands unanswered and
        the fed text ends where feeding stopped, so the next turn feeds only the rest."""
        fed = self.pos - turn.asked_at
        if fed:
            self.messages = [*turn.history, turn.user]
            self._fed_text = turn.fed_before + self.bundle.text.decode(
                turn.ids[:fed], skip_special_tokens=False)

    def append_image(self, frame: Any) -> None:
        """Add a picture (path, PIL image, HxWx3 RGB array) to the current user turn and feed it
        now, with the chat-template text before it; `ask` then completes the turn."""
        from edgekv.runtime.image_prompt import frames_per_image
        from edgekv.runtime.preprocess import load_image

        self._refuse_while_answering()
        image = load_image(frame)  # a bad picture fails before the conversation changes
        self._vision_encoder()  # a text bundle fails here
        vision = self.bundle.manifest.vision
        tokens = vision.layout.tokens_per_frame * frames_per_image(vision.preprocess)
        room = self.room()
        if tokens > room:
            raise BudgetError(
                f"one picture is {tokens} tokens and the cache has {room} slots for it "
                f"(budget {self.cache.budget}, less what it must keep): the model would never "
                "see a whole picture. Export with a larger --budget, or fewer tiles or a "
                "smaller --image-size")
        self._add_user_item({"type": "image"})
        rendered = self._render_open_turn()
        common = _common_prefix(rendered, self._fed_text)
        self.feed_prompt(rendered[common:], [image])
        self._fed_text = rendered

    def message_content(self, text: str) -> Any:
        # Vision-language chat templates iterate content items; text templates take a string.
        return text if self.bundle.manifest.vision is None else [{"type": "text", "text": text}]

    def _user_turn(self, question: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(earlier messages, the user turn asking `question`). With a vision bundle the
        question completes the open turn that `append_image` started."""
        if self.bundle.manifest.vision is None:
            return self.messages, {"role": "user", "content": question}
        item = {"type": "text", "text": question}
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "user" and isinstance(last["content"], list):
            return self.messages[:-1], {**last, "content": [*last["content"], item]}
        return self.messages, {"role": "user", "content": [item]}

    def _add_user_item(self, item: dict[str, Any]) -> None:
        """Append to the open user turn (one whose content is a list), or start one."""
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "user" or not isinstance(last["content"], list):
            last = {"role": "user", "content": []}
            self.messages.append(last)
        last["content"].append(item)

    def _render_open_turn(self) -> str:
        """The template's text for the conversation so far, up to the end of the open turn's
        last item (rendered with a cut mark after it, cut there)."""
        last = self.messages[-1]
        marked = [*self.messages[:-1],
                  {**last, "content": [*last["content"], {"type": "text", "text": _CUT}]}]
        rendered = self.bundle.text.render(marked, add_generation_prompt=False)
        cut = rendered.find(_CUT)
        if cut < 0:
            raise BundleError("the chat template drops text items; cannot place images")
        return rendered[:cut]


@dataclass
class _Turn:
    """A question as `ask` prepared it: the new token ids, and what the conversation was."""

    ids: list[int]  # the rendered conversation after what was already fed
    system: list[dict[str, Any]]
    history: list[dict[str, Any]]
    user: dict[str, Any]
    fed_before: str  # the text already fed that the rendering starts with
    asked_at: int  # Session.pos at the call


def _checked_answer_args(question: Any, max_new_tokens: Any, sampler: Any,
                         stop: Any) -> tuple[str, ...]:
    """Refuse `ask`'s bad arguments at the call: inside the answer generator they would fail
    after the question was fed. Returns `stop` as a tuple (None: no stop string)."""
    if not isinstance(question, str):
        raise TypeError(f"the question must be a str, not {type(question).__name__}")
    if not whole_number(max_new_tokens) or max_new_tokens < 0:
        raise SettingError(f"max_new_tokens must be a whole number >= 0, not {max_new_tokens!r}")
    if sampler is not None and not callable(sampler):
        raise TypeError(f"sampler must be a Sampler (or None: greedy), not "
                        f"{type(sampler).__name__}")
    if isinstance(stop, str):  # iterated, "User:" would stop at any of its letters
        raise TypeError(f"stop must be a tuple of strings, e.g. ({stop!r},), not a str")
    stop = tuple(stop or ())
    if not all(isinstance(s, str) and s for s in stop):
        # an empty string is in every text: the answer would end after its first token
        raise SettingError(f"stop strings must be non-empty str, not {stop!r}")
    return stop


def _until_stop(text: str, stop: tuple[str, ...], hold: bool = False) -> str:
    """`text` up to the first stop string; with `hold`, while none has appeared, less any tail
    that may be the beginning of one (so a stop string is never shown in part)."""
    cuts = [text.find(s) for s in stop if s and s in text]
    if cuts:
        return text[: min(cuts)]
    tail = max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    return text[: len(text) - tail] if hold else text


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
