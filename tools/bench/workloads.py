"""The workloads: the same token ids for edgekv and every peer, cut from one long text.

Ids come from the bundle's tokenizer; the peers run the same model (SmolLM2), so the ids mean
the same to them and nobody's tokenizer is on the clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "tests" / "data" / "pride_and_prejudice.txt"


@dataclass(frozen=True)
class Workloads:
    prompt_tokens: int = 2048  # prefill, and the context decode runs after
    decode_tokens: int = 256  # greedy tokens after the prompt
    long_tokens: int = 32768  # the long stream
    mark_tokens: int = 4096  # RSS growth is measured from here to the end of the long stream
    long_budgets: tuple[int, ...] = (512, 2048)  # edgekv budgets for the long stream
    # perplexity of each runner over the text's first tokens, whole context (0: not measured):
    # what a quantized runner's speed costs in quality, each against its own fp32 runner
    quality_tokens: int = 2048
    threads: int = 2
    rounds: int = 1  # speed runs per runner, interleaved; the median is reported
    membw_mib: int = 256  # per thread and array: far above any cache, so DRAM is what is timed
    # edgekv against onnxruntime-genai's graph in one process (same_process.py): rounds of
    # this many decode steps each, alternated (0 rounds: not measured)
    same_process_rounds: int = 8
    same_process_steps: int = 32

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


QUICK = Workloads(prompt_tokens=128, decode_tokens=16, long_tokens=1024, mark_tokens=256,
                  long_budgets=(), membw_mib=32, quality_tokens=64, same_process_rounds=2,
                  same_process_steps=4)  # () = the bundle's own budget


@dataclass(frozen=True)
class TokenIds:
    prompt: list[int]
    long: list[int]
    quality: list[int]


def cut_ids(all_ids: list[int], w: Workloads) -> TokenIds:
    """The prompt is the text's start; the long stream repeats the text if it is too short."""
    need = max(w.prompt_tokens, w.long_tokens, w.quality_tokens)
    if not all_ids:
        raise ValueError("the workload text has no tokens")
    repeated = list(all_ids)
    while len(repeated) < need:
        repeated += all_ids
    return TokenIds(prompt=repeated[: w.prompt_tokens], long=repeated[: w.long_tokens],
                    quality=repeated[: w.quality_tokens])


def text_ids(bundle_dir: str | Path, text: str | Path = DEFAULT_TEXT) -> list[int]:
    from edgekv.runtime.bundle import Bundle
    from edgekv.tools.ppl import read_text

    codec = Bundle.open(bundle_dir, verify=False).text
    return list(codec.encode(read_text(text)))
