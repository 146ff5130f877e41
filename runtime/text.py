"""Tokenizer and chat template on the device: `tokenizers` and jinja2, no transformers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from edgekv.export.manifest import TokenizerInfo
from edgekv.runtime.errors import BundleError
from edgekv.runtime.utf8 import valid_utf8


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


@dataclass
class TextCodec:
    tokenizer: Tokenizer
    info: TokenizerInfo

    @classmethod
    def from_bundle(cls, bundle_dir: Path, info: TokenizerInfo) -> TextCodec:
        try:
            return cls(Tokenizer.from_file(str(bundle_dir / info.file)), info)
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            # its message is a JSON parser's ("expected `,`"): say what the file should be
            raise BundleError(f"cannot read tokenizer {info.file}: {exc} (not a tokenizer "
                              "file of Hugging Face tokenizers); re-export the bundle") from exc

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer.encode(valid_utf8(text), add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    @property
    def eos_ids(self) -> set[int]:
        return set(self.info.eos_token_ids)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        """The chat template applied as transformers applies it (same jinja settings)."""
        if not self.info.chat_template:
            # No template: plain "role: content" lines, so base models still chat. An answer
            # follows "assistant:" as the model wrote it there (no space added), so the next
            # turn renders what was fed and the session does not feed the answer again.
            text = "".join(f"{m['role']}:{m['content']}\n" if m["role"] == "assistant"
                           else f"{m['role']}: {m['content']}\n" for m in messages)
            return text + ("assistant:" if add_generation_prompt else "")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        template = env.from_string(self.info.chat_template)
        return template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.info.bos_token or "",
            eos_token=self.info.eos_token or "",
        )
