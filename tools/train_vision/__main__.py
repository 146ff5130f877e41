"""python -m edgekv.tools.train_vision [see] [--steps N] [--minutes M] [--out FILE]
python -m edgekv.tools.train_vision bound [--examples N] [--seed S]

Trains smolvlm-synthetic's vision tower and writes the weights the package ships
(assets/smolvlm_synthetic/vision.safetensors by default) plus a JSON log beside them. The
recipe has two stages (docs/smolvlm-synthetic.md): `see` (see.py) teaches the tower per patch
what it shows, without the language model; the default stage (train.py) then trains tower and
connector through SmolLM2, `--init` the first stage's file. `bound` asks SmolLM2 the held-out
colour/shape questions with the scene told in words (text_bound.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgekv.export import smolvlm_synthetic as smolvlm


def main(argv: list[str] | None = None) -> int:
    from edgekv.tools.train_vision.see import SeeOptions, Seer
    from edgekv.tools.train_vision.train import Trainer, TrainOptions

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bound"]:
        return bound(argv[1:])
    see = bool(argv) and argv[0] == "see"
    argv = argv[1:] if see else argv
    stage, options = (Seer, SeeOptions) if see else (Trainer, TrainOptions)
    defaults = options()
    p = argparse.ArgumentParser(prog="python -m edgekv.tools.train_vision" + " see" * see)
    for name, value in defaults.__dict__.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--out", type=Path, default=smolvlm.ASSET_DIR / smolvlm.WEIGHTS)
    args = vars(p.parse_args(argv))
    out = args.pop("out")
    from edgekv.export.loading import _smollm2_135m, load

    language_model, tokenizer = load(_smollm2_135m())
    trainer = stage(language_model, tokenizer, options(**args))
    log = trainer.run(out, say=lambda line: print(line, flush=True))
    name = "seeing.json" if see else "training.json"
    out.with_name(name).write_text(json.dumps(log, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def bound(argv: list[str]) -> int:
    from edgekv.export.loading import _smollm2_135m, load
    from edgekv.tools.scene_eval import HELD_OUT_SEED
    from edgekv.tools.train_vision.text_bound import text_bound

    p = argparse.ArgumentParser(prog="python -m edgekv.tools.train_vision bound")
    p.add_argument("--examples", type=int, default=600)
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    args = p.parse_args(argv)
    language_model, tokenizer = load(_smollm2_135m())
    strict, lenient = text_bound(language_model, tokenizer, args.examples, args.seed,
                                 say=lambda line: print(line, flush=True))
    for name, score in (("strict (first word)", strict), ("lenient (first colour/shape word)",
                                                         lenient)):
        print(f"{name}:")
        print("\n".join(f"  {line}" for line in score.lines()))
    for scene, truth, said in lenient.mistakes[:8]:
        print(f"  {scene}  want {truth!r}, said {said!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
