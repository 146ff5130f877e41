"""`edgekv eval ppl / quality / scenes` and `edgekv verify`: how good a bundle is."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edgekv.cli.common import add_session_args, open_session, print_lines, say, seed_arg
from edgekv.runtime.errors import EdgeKVError
from edgekv.tools.int_list import int_list

VERIFY_PROMPT = "The capital of France is Paris, and the capital of"


def _eval_ppl(args: argparse.Namespace) -> int:
    from edgekv.tools.ppl import read_tokens, report, run_hf_baseline, streaming_ppl

    if args.tokens < 2 or args.window < 1:
        raise EdgeKVError(f"--tokens must be at least 2 and --window at least 1, not "
                          f"{args.tokens} and {args.window}")
    if args.hf_tokens is not None and args.hf_tokens < 2:
        raise EdgeKVError(f"--hf-tokens must be at least 2, not {args.hf_tokens}")
    if args.hf:
        from edgekv.export.loading import resolve

        resolve(args.hf)  # an unknown model fails now, not after the edgekv pass
    session = open_session(args)
    ids = read_tokens(session, args.text, args.tokens)
    result = streaming_ppl(session, ids, window=args.window, progress=not args.quiet)
    hf_tokens = min(args.hf_tokens if args.hf_tokens is not None else args.tokens, args.tokens)
    hf = run_hf_baseline(args.hf, args.text, hf_tokens, args.window) if args.hf else None
    if args.json:
        print(json.dumps({**result.to_dict(), **({"hf": hf} if hf else {})}))
    else:
        print(report(result, hf))
    return 0


def _eval_quality(args: argparse.Namespace) -> int:
    from edgekv.tools.quality import quality_table

    if args.tokens < 2 or args.full_tokens < 2:
        raise EdgeKVError(f"--tokens and --full-tokens must be at least 2, not {args.tokens} "
                          f"and {args.full_tokens}")
    table = quality_table(args.bundle, args.text, args.tokens,
                          list(int_list(args.budgets, "--budgets")),
                          [p for p in args.policies.split(",") if p],
                          args.full_bundle, args.full_tokens, args.threads)
    print(json.dumps(table.to_dict()) if args.json else table.render())
    return 0


def _eval_scenes(args: argparse.Namespace) -> int:
    from edgekv.runtime.bundle import Bundle
    from edgekv.runtime.session import Session
    from edgekv.tools.scene_eval import evaluate

    bundle = Bundle.open(args.bundle)
    if bundle.manifest.vision is None:
        raise EdgeKVError(f"{args.bundle} has no vision graph: eval scenes needs a vision bundle")
    if args.examples < 1:
        raise EdgeKVError("--examples must be at least 1")
    session = Session.open(bundle, "full", backend=args.backend, threads=args.threads)
    score = evaluate(session, args.examples, args.seed, say=say)
    if args.mistakes:
        print_lines([f"{q!r}: truth {t!r}, said {a!r}" for q, t, a in score.mistakes],
                     sys.stdout)
    print_lines(score.lines(), sys.stdout)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from edgekv.export.loading import load, resolve
    from edgekv.export.manifest import load_manifest
    from edgekv.export.validate import hf_logits, max_diff
    from edgekv.export.vlm_loading import is_vision_language, load_vision_language
    from edgekv.runtime.utf8 import valid_utf8

    manifest = load_manifest(args.bundle)
    if args.prompt is not None and not args.prompt.strip():
        raise EdgeKVError("--prompt is empty: there is nothing to compare")
    if args.prompt is not None:
        args.prompt = valid_utf8(args.prompt)  # bytes argv could not decode: HF refuses them
    if args.image:
        return _verify_image(args, manifest)
    args.prompt = args.prompt or VERIFY_PROMPT
    source = resolve(args.against)
    if is_vision_language(source):  # a multimodal bundle's text path, against the whole model
        vlm = load_vision_language(source)
        model, tokenizer = vlm.model, vlm.tokenizer
    else:
        model, tokenizer = load(source)
    vocab = model.get_input_embeddings().weight.shape[0]
    if vocab != manifest.dims.vocab_size:
        raise EdgeKVError(f"{args.bundle} was not exported from {args.against}: its vocabulary "
                          f"has {manifest.dims.vocab_size} tokens, the model's {vocab}")
    ids = tokenizer(args.prompt).input_ids[: manifest.budget]
    if not ids:  # a tokenizer without byte fallback drops what its vocabulary lacks
        raise EdgeKVError(f"--prompt {args.prompt!r} encodes to no tokens with this model's "
                          "tokenizer: there is nothing to compare")
    reference = hf_logits(model, ids)
    diff = max_diff(args.bundle, ids, reference, backend=args.backend)
    return _verified(args, manifest, diff, reference, {"tokens": len(ids)})


def _verified(args: argparse.Namespace, manifest: Any, diff: float, reference: Any,
              report: dict[str, int]) -> int:
    """Print a comparison with HF against its limit; the exit status: 0 pass, 1 fail."""
    from edgekv.export.validate import hf_limit

    limit = args.tolerance if args.tolerance is not None else hf_limit(manifest, reference)
    passed = diff <= limit
    if args.json:
        print(json.dumps({"max_abs_logit_diff": diff, **report, "limit": limit,
                          "passed": passed}))
    else:
        pictures = f" ({report['images']} image(s))" if "images" in report else ""
        print(f"max_abs_logit_diff {diff:.3e} over {report['tokens']} tokens{pictures}: "
              f"{'PASS' if passed else 'FAIL'} (limit {limit:.1e})")
    return 0 if passed else 1


def _verify_image(args: argparse.Namespace, manifest: object) -> int:
    import numpy as np

    from edgekv.export.loading import resolve
    from edgekv.export.validate_vlm import QUESTION, both_logits
    from edgekv.export.vlm_loading import is_vision_language, load_vision_language
    from edgekv.runtime.preprocess import load_image

    if manifest.vision is None:  # type: ignore[attr-defined]
        raise EdgeKVError(f"{args.bundle} is a text-only bundle; --image needs a multimodal one")
    images = [load_image(path) for path in args.image]
    source = resolve(args.against)
    if not is_vision_language(source):
        raise EdgeKVError(f"{args.against} is not a vision-language model")
    ours, reference = both_logits(args.bundle, load_vision_language(source), images,
                                  args.backend, args.prompt or QUESTION)
    return _verified(args, manifest, float(np.abs(ours - reference).max()), reference,
                     {"tokens": len(ours), "images": len(images)})


def add_parsers(sub: Any) -> None:
    """This module's commands, on the `edgekv` parser's subcommands."""
    p = sub.add_parser("eval", help="evaluations")
    ev = p.add_subparsers(dest="evaluation", required=True)

    p = ev.add_parser("ppl", help="streaming perplexity of a text under a policy")
    add_session_args(p)
    p.add_argument("--text", required=True)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--budget", type=int, default=None, help="lower the bundle's budget")
    p.add_argument("--window", type=int, default=4096, help="report perplexity per window")
    p.add_argument("--hf", metavar="MODEL", default=None,
                   help="also run HF transformers with a full cache on the same text")
    p.add_argument("--hf-tokens", type=int, default=None,
                   help="stop the HF baseline after this many tokens (default: --tokens; its "
                        "cost grows as n^2)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_eval_ppl)

    p = ev.add_parser("quality", help="perplexity of policies x budgets on one long text")
    p.add_argument("bundle", help="bundle whose budget is at least the largest --budgets")
    p.add_argument("--text", required=True)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--budgets", default="256,512,1024")
    p.add_argument("--policies", default="window,streaming,h2o,snapkv,inf-mllm,structured")
    p.add_argument("--full-bundle", default=None, help="bundle big enough for --full-tokens")
    p.add_argument("--full-tokens", type=int, default=8192)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_eval_quality)

    p = ev.add_parser("scenes", help="accuracy on held-out synthetic scenes (one frame, one "
                      "question each, full cache): smolvlm-synthetic's acceptance check")
    p.add_argument("bundle", help="a vision bundle (e.g. exported from smolvlm-synthetic)")
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--seed", type=seed_arg, default=7, help="scene seed (training used 0 and 1)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--mistakes", action="store_true", help="list the wrong answers")
    p.set_defaults(func=_eval_scenes)

    p = sub.add_parser("verify", help="compare a bundle with its original model")
    p.add_argument("bundle")
    p.add_argument("--against", required=True, help="the model the bundle came from")
    p.add_argument("--prompt", default=None,
                   help=f"the text compared (default: {VERIFY_PROMPT!r}); with --image, the "
                        "question after the pictures")
    p.add_argument("--backend", default="ort")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest |logit diff| that passes (default: the bundle's dtype "
                        "tolerance, or the drift export allows int4 and int8-cache bundles)")
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="compare an image + question prompt (repeat for several images)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_verify)
