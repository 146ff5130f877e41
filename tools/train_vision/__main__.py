"""python -m edgekv.tools.train_vision [--steps N] [--minutes M] [--out FILE]

Trains smolvlm-synthetic's vision tower (see train.py) and writes the weights the package ships
(assets/smolvlm_synthetic/vision.safetensors by default) plus a JSON log beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgekv.export import smolvlm_synthetic as smolvlm


def main(argv: list[str] | None = None) -> int:
    from edgekv.tools.train_vision.train import Trainer, TrainOptions

    defaults = TrainOptions()
    p = argparse.ArgumentParser(prog="python -m edgekv.tools.train_vision")
    for name, value in defaults.__dict__.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--out", type=Path, default=smolvlm.ASSET_DIR / smolvlm.WEIGHTS)
    args = vars(p.parse_args(argv))
    out = args.pop("out")
    from edgekv.export.loading import _smollm2_135m, load

    language_model, tokenizer = load(_smollm2_135m())
    trainer = Trainer(language_model, tokenizer, TrainOptions(**args))
    log = trainer.run(out, say=lambda line: print(line, flush=True))
    out.with_name("training.json").write_text(json.dumps(log, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
