"""`edgekv export`: model -> bundle directory, written aside and renamed into place at the end.

An interrupted export leaves only a hidden `.NAME.partial-*` directory, never a bundle that
looks valid: the manifest (with the sha256 of every file) is the last file written, and the
directory only takes its final name after validation passed.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import edgekv
from edgekv.export import onnx_graph
from edgekv.export.decoder_step import DecoderStep
from edgekv.export.families import adapter_for, family_of
from edgekv.export.families.base import LlamaShapedAdapter
from edgekv.export.loading import load, model_type, resolve
from edgekv.export.manifest import LM_HEAD, EmbeddingTable, Manifest, TokenizerInfo
from edgekv.export.quantize import (
    COMPUTE_LEVELS,
    QUANT_FORMAT,
    quantize_graph,
    quantize_lm_head,
    set_compute,
)
from edgekv.runtime.errors import EdgeKVError, ModelError

# Graph dtype per bundle dtype: int4 bundles trace in fp32, then quantize the weights.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "int4": torch.float32}
# Max |logit difference| accepted by the closing validation, per dtype. fp32/fp16 compare with
# the HF model; int4 compares with the same step run on the dequantized int4 weights (that
# proves the graph; what quantization costs is a perplexity question, not a tolerance).
DEFAULT_TOLERANCE = {"fp32": 1e-3, "fp16": 0.25, "int4": 1e-2}
# int4 bundles are validated with exact compute (export/quantize.py); int8 activations then
# move logits (SmolLM2, validation prompt: 1.8-2.0, logits up to 31). A drift above this share
# of the largest reference logit is an error, not rounding (a wrong layout moves them by tens).
INT8_COMPUTE_DRIFT = 0.25
VALIDATION_PROMPT = (
    "The quick brown fox jumps over the lazy dog. Memory on the device is fixed when the "
    "model is exported, and the cache keeps what matters."
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    budget: int = 2048
    chunk: int = 64
    dtype: str = "fp32"
    position_mode: str = "cache"
    opset: int = 18
    tolerance: float | None = None
    validate: bool = True
    force: bool = False
    target: str = "ort"
    lm_head: str = "int8"  # int4 bundles: the lm_head as 8-bit blocks, or "fp32"
    key_rope: str = "graph"  # "cached": keys cached rotated (ort target; runtime/key_rotation.py)
    int4_compute: str = "int8"  # int4 bundles: MatMulNBits with int8 activations, or "fp32"
    attention: str = "graph"  # "gqa": one GroupQueryAttention per layer (ort, keys cached rotated)
    attn_mass: bool = True  # False: no attention mass (streaming, window and full never read it)
    # ort, tied embeddings: ONNX Runtime packs its own copy of the lm_head (faster GEMV) instead
    # of reading embed.bin's pages through a graph input
    packed_lm_head: bool = False
    # "int8": the cache holds int8 K/V read by the attention kernel (gqa bundles without the
    # mass; export/kv_int8.py), a quarter of the fp32 cache's bytes per decode step
    kv_cache: str = "float"

    @property
    def rope_table(self) -> int:
        """Table rows for the fused RoPE (ort target): positions are ranks below budget +
        chunk in cache mode; absolute mode gets the model's context length too. Rotated keys
        drift upward by one per eviction between re-normalisations: 4 budgets of headroom
        (the table is 32 KiB per 1000 rows at head_dim 64)."""
        if self.target != "ort":
            return 0
        headroom = 4 * self.budget if self.key_rope == "cached" else 0
        return self.budget + self.chunk + headroom
    # Vision-language models only (ignored for text models).
    image_size: tuple[int, int] | None = None  # (height, width) of one vision frame
    frames_per_call: int = 1  # frames per vision-graph call (its fixed batch)
    tiling: tuple[int, int] | None = None  # idefics3: (rows, cols) tiles + global; (0, 0) global

    def check(self) -> None:
        choices = {"--dtype": (self.dtype, tuple(DTYPES)),
                   "--position-mode": (self.position_mode, ("cache", "absolute")),
                   "--target": (self.target, ("ort", "tensorrt")),
                   "--key-rope": (self.key_rope, ("graph", "cached")),
                   "--lm-head": (self.lm_head, ("int8", "fp32")),
                   "--int4-compute": (self.int4_compute, tuple(COMPUTE_LEVELS)),
                   "--attention": (self.attention, ("graph", "gqa")),
                   "--kv-cache": (self.kv_cache, ("float", "int8"))}
        for flag, (value, allowed) in choices.items():
            if value not in allowed:
                raise EdgeKVError(f"{flag} {value!r}: choose one of {', '.join(allowed)}")
        if self.dtype == "int4" and self.target != "ort":
            raise EdgeKVError(
                "--dtype int4 uses ONNX Runtime's MatMulNBits, which TensorRT does not parse: "
                "use --target ort, or fp16 for TensorRT"
            )
        if self.key_rope == "cached" and self.target != "ort":
            raise EdgeKVError(
                "--key-rope cached needs --target ort: the runtime re-rotates keys in the host "
                "cache, which the device backends (TensorRT, CUDA) do not keep"
            )
        if self.attention == "gqa" and (self.target != "ort" or self.key_rope != "cached"):
            raise EdgeKVError(
                "--attention gqa is ONNX Runtime's GroupQueryAttention over keys cached rotated: "
                "use it with --target ort --key-rope cached"
            )
        if self.kv_cache == "int8" and (self.attention != "gqa" or self.attn_mass
                                        or self.dtype not in ("fp32", "int4")):
            raise EdgeKVError(
                "--kv-cache int8 is read by GroupQueryAttention and has no attention mass: use "
                "it with --attention gqa --no-attn-mass (and --dtype fp32 or int4)"
            )
        if self.packed_lm_head and self.target != "ort":
            raise EdgeKVError("--packed-lm-head is ONNX Runtime's weight packing: use --target ort")
        if self.frames_per_call < 1:
            raise EdgeKVError("--frames-per-call must be at least 1")
        if self.chunk < 1 or self.budget < 1:
            raise EdgeKVError("--budget and --chunk must be positive")
        if self.budget < self.chunk:
            raise EdgeKVError(
                f"--budget {self.budget} is smaller than --chunk {self.chunk}: one chunk must "
                "fit in the cache"
            )


def build_step(
    model: Any, dtype: str = "fp32", rope_table: int = 0, fused_norm: bool = False,
    cached_rope: bool = False, gqa: bool = False, attn_mass: bool = True,
) -> tuple[str, LlamaShapedAdapter, DecoderStep]:
    """(family, adapter, DecoderStep) for an HF model: its weights under the contract's graph."""
    family, adapter = adapter_for(model)
    dims = adapter.dims(model)
    if dims.mrope_section:
        if cached_rope:
            raise EdgeKVError(f"--key-rope cached needs 1-D RoPE; {family} uses M-RoPE "
                              "(3 position components): export with --key-rope graph")
        rope_table = 0  # M-RoPE positions have 3 components: computed in the graph
    step = DecoderStep(dims, rope_table=rope_table, fused_norm=fused_norm,
                       cached_rope=cached_rope, gqa=gqa, attn_mass=attn_mass)
    step.load_state_dict(adapter.weights(model), strict=True)
    return family, adapter, step.to(DTYPES[dtype]).eval()


def tokenizer_info(tokenizer: Any, model: Any) -> TokenizerInfo:
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    bos = tokenizer.bos_token_id
    probe = tokenizer("a").input_ids
    return TokenizerInfo(
        file="tokenizer.json",
        chat_template=template,
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
        eos_token_ids=sorted(eos_ids),
        add_bos_token=bos is not None and probe[:1] == [bos],
    )


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def export(model_arg: str, out: str | Path, options: ExportOptions, log: Log = _stderr) -> Manifest:
    """Export MODEL (directory, .gguf or built-in name) to a bundle at `out`."""
    options.check()
    _check_out(Path(out), options)
    source = resolve(model_arg)
    if (kind := model_type(source)) is not None:
        family_of(kind)  # an unsupported family is refused before its weights load
    log(f"loading {source.label}")
    from edgekv.export.vlm_loading import is_vision_language

    if is_vision_language(source):
        from edgekv.export.families.vlm import VisionSetup
        from edgekv.export.vlm_export import VisionExport
        from edgekv.export.vlm_loading import load_vision_language

        vlm = load_vision_language(source)
        setup = VisionSetup(options.image_size, options.frames_per_call, options.tiling)
        return export_model(vlm.model, vlm.tokenizer, source.label, out, options, log,
                            vision=VisionExport(vlm, setup))
    model, tokenizer = load(source)
    return export_model(model, tokenizer, source.label, out, options, log)


def _check_out(out: Path, options: ExportOptions) -> None:
    if out.exists() and not options.force:
        raise EdgeKVError(f"{out} exists; choose another --out or pass --force to replace it")


def export_model(
    model: Any, tokenizer: Any, label: str, out: str | Path, options: ExportOptions,
    log: Log = _stderr, vision: Any = None,
) -> Manifest:
    """Export a loaded HF model and tokenizer to a bundle at `out`; returns its manifest.

    `vision` (an `export.vlm_export.VisionExport`) adds the vision graph of a multimodal model.
    """
    options.check()
    out = Path(out)
    _check_out(out, options)
    t0 = time.perf_counter()
    rope_table = options.rope_table
    if rope_table and options.position_mode == "absolute":
        rope_table = max(rope_table, int(getattr(model.config, "max_position_embeddings", 0)))
    # refusals that need only the config come before build_step copies the weights
    window = adapter_for(model)[1].sliding_window(model)
    if window is not None and options.budget > window:
        raise ModelError(
            f"this model attends to at most its last {window} tokens (sliding_window); a "
            f"--budget of {options.budget} would let it look further back than it was trained "
            f"to: export with --budget {window} or less")
    if vision is not None:
        vision.check()
    family, adapter, step = build_step(model, options.dtype, rope_table,
                                       fused_norm=options.target == "ort",
                                       cached_rope=options.key_rope == "cached",
                                       gqa=options.attention == "gqa",
                                       attn_mass=options.attn_mass)
    dims = step.dims
    log(f"family {family}: {dims.num_layers} layers, hidden {dims.hidden_size}, "
        f"{dims.num_heads} heads / {dims.num_kv_heads} KV heads, vocab {dims.vocab_size}")

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        log(f"tracing decoder (budget {options.budget}, chunk 1..{options.chunk}, {options.dtype})")
        # ONNX Runtime targets take the cache per layer (zero-copy views) and a `logit_rows`
        # input; TensorRT bundles keep the original contract (what its backends bind).
        per_layer = options.target == "ort"
        lm_head_input = per_layer and not options.packed_lm_head
        proto = onnx_graph.trace(step, options.budget, options.chunk, options.opset, tmp,
                                 per_layer, rows=per_layer)
        quantized = options.dtype == "int4"
        int8_head = quantized and options.lm_head == "int8"
        if quantized:
            log("quantizing weights to block-wise int4 (MatMulNBits)")
            dequantized = quantize_graph(proto)
            if int8_head:
                log("quantizing the lm_head to block-wise int8 (MatMulNBits)")
                dequantized[LM_HEAD] = quantize_lm_head(
                    proto, step.lm_head.weight.detach().float().numpy())
        embedding = (adapter.embeddings(model).detach().to(DTYPES[options.dtype])
                     .contiguous().numpy())
        # The tied lm_head reads embed.bin's pages, unless it is int8 (export/quantize.py).
        shared = dims.tie_word_embeddings and not int8_head
        onnx_graph.save_with_shared_embedding(proto, embedding, shared, tmp,
                                              lm_head_input=lm_head_input)
        tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        manifest = Manifest(
            model=label,
            family=family,
            dims=dims,
            budget=options.budget,
            chunk=options.chunk,
            dtype=options.dtype,
            position_mode=options.position_mode,
            embedding=EmbeddingTable(onnx_graph.EMBED_FILE, str(embedding.dtype),
                                     list(embedding.shape), shared_with_lm_head=shared,
                                     lm_head_input=shared and lm_head_input),
            tokenizer=tokenizer_info(tokenizer, model),
            graphs={"decoder": "decoder.onnx"},
            inputs={n: n for n in onnx_graph.graph_inputs(step.cached_rope)
                    + [onnx_graph.LOGIT_ROWS] * per_layer + [onnx_graph.LIVE_ROWS] * step.gqa},
            kv_layout="per_layer" if per_layer else "stacked",
            outputs={n: n for n in onnx_graph.OUTPUTS},
            attention=options.attention,
            attn_mass=options.attn_mass,
            opset=options.opset,
            edgekv_version=edgekv.__version__,
            quant_format=QUANT_FORMAT if quantized else "",
            target=options.target,
            rope_table=step.rope_table,
            key_rope=options.key_rope,
            quant_compute=options.int4_compute if quantized else "",
        )
        if vision is not None:
            manifest = vision.write(tmp, manifest, DTYPES[options.dtype], options.opset, log)
        manifest = manifest.with_files(tmp)
        manifest.save(tmp)
        ids = tokenizer(VALIDATION_PROMPT).input_ids[: options.budget]
        reference = None  # HF's logits on `ids`, when validating
        if options.validate:
            from edgekv.export.validate import compare_with_step, hf_logits, max_diff, step_logits

            tolerance = options.tolerance or DEFAULT_TOLERANCE[options.dtype]
            reference = hf_logits(model, ids)
            diff = max_diff(tmp, ids, reference)
            log(f"validation: max |logit diff| vs HF = {diff:.2e} over {len(ids)} tokens")
            vs_hf = diff
            exact_step = None  # int4: the step with the dequantized weights (a deep copy)
            if quantized:
                # Quantization moves logits more than a missing bias or another activation
                # would: that the graph is HF's model is checked on the float weights, eagerly
                # (the step that was traced), at fp32's tolerance.
                structure = float(np.abs(step_logits(tmp, step, ids) - reference).max())
                log(f"validation: max |logit diff| vs HF with the float weights = "
                    f"{structure:.2e} (eager)")
                if not structure <= DEFAULT_TOLERANCE["fp32"]:
                    raise ModelError(
                        f"the exported decoder, with float weights, differs from the HF model "
                        f"by {structure:.3e} > {DEFAULT_TOLERANCE['fp32']:.0e}: it does not "
                        "compute what the model does; bundle not written")
                exact_step = _with_weights(step, dequantized)
                diff = compare_with_step(tmp, exact_step, ids)
                log(f"validation: max |logit diff| vs the dequantized weights = {diff:.2e} "
                    "(exact compute)")
            log(f"tolerance {tolerance:.0e}")
            if not diff <= tolerance:
                raise ModelError(
                    f"exported decoder differs from the HF model by {diff:.3e} > {tolerance:.0e}; "
                    "bundle not written"
                )
            validation = {"max_abs_logit_diff": diff, "tolerance": tolerance,
                          "prompt_tokens": len(ids), "backend": "ort", "vs_hf": vs_hf}
            if quantized:
                validation["float_weights_vs_hf"] = structure
            if vision is not None:  # int4: checked against its weights, as the text is
                steps = (step, exact_step) if quantized else None
                validation.update(vision.validate(tmp, tolerance, log, steps))
            # The manifest is not among the hashed files, so the digests stay valid.
            manifest = replace(manifest, validation=validation)
            manifest.save(tmp)
        if quantized:
            manifest = _ship_compute(proto, tmp, manifest, options, reference, ids, log)
        if options.kv_cache == "int8":
            manifest = _ship_int8_cache(proto, tmp, manifest, tokenizer, reference, ids, log)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    log("graphs: " + ", ".join(f"{name} {_graph_bytes(out, file) / 2**20:.1f} MiB"
                               for name, file in _graph_files(manifest).items()))
    log("wrote " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sorted(sizes.items())))
    log(f"bundle {out} ready in {time.perf_counter() - t0:.0f} s")
    return manifest


def _ship_compute(proto: Any, tmp: Path, manifest: Manifest, options: ExportOptions,
                  reference: np.ndarray | None, ids: list[int], log: Log) -> Manifest:
    """Rewrite the validated (exact) int4 graph with the compute it ships with; with the HF
    `reference` logits (validation), measure what that compute moves and refuse a gross
    difference."""
    set_compute(proto, options.int4_compute)
    onnx.save_model(proto, tmp / manifest.graphs["decoder"])
    manifest = manifest.with_files(tmp)
    manifest.save(tmp)
    return _record_drift(tmp, manifest, reference, ids, log, "compute_vs_hf",
                         f"{options.int4_compute} compute")


def _ship_int8_cache(proto: Any, tmp: Path, manifest: Manifest, tokenizer: Any,
                     reference: np.ndarray | None, ids: list[int], log: Log) -> Manifest:
    """Rewrite the validated float-cache graph for an int8 cache (export/kv_int8.py); with
    the HF `reference` logits, measure what the int8 cache moves and refuse a gross drift."""
    from edgekv.export import kv_int8

    calibration = tokenizer(kv_int8.CALIBRATION_TEXT.read_text()).input_ids
    log(f"calibrating the int8 KV cache on {min(len(calibration), manifest.budget)} tokens")
    scales = kv_int8.calibrate(tmp, calibration)
    kv_int8.quantize_cache_io(proto, scales)
    onnx.save_model(proto, tmp / manifest.graphs["decoder"])
    manifest = replace(manifest, kv_quant="int8", kv_scales=scales).with_files(tmp)
    manifest.save(tmp)
    return _record_drift(tmp, manifest, reference, ids, log, "kv_int8_vs_hf", "the int8 KV cache")


def _record_drift(tmp: Path, manifest: Manifest, reference: np.ndarray | None, ids: list[int],
                  log: Log, key: str, what: str) -> Manifest:
    """With the HF `reference` logits (validation), measure how far the rewritten bundle at
    `tmp` moved from HF, record it in the manifest's validation as `key`, and refuse a gross
    difference (a quarter of the largest logit)."""
    if reference is None or not manifest.validation:
        return manifest
    from edgekv.export.validate import max_diff

    # half the tokens as chunks, half one by one: both ways a bundle may attend
    drift = max_diff(tmp, ids, reference, decode_from=len(ids) // 2)
    bound = INT8_COMPUTE_DRIFT * float(np.abs(reference).max())
    log(f"validation: {what} moves logits by {drift:.2e} vs HF (refused above {bound:.2e})")
    if not drift <= bound:
        raise ModelError(f"bundle with {what} differs from the HF model by {drift:.3e} > "
                         f"{bound:.3e}; bundle not written")
    manifest = replace(manifest, validation={**manifest.validation, key: drift})
    manifest.save(tmp)
    return manifest


def _with_weights(step: DecoderStep, replaced: dict[str, Any]) -> DecoderStep:
    """A copy of `step` with some weights replaced (the int4 reference)."""
    ref = copy.deepcopy(step)
    state = ref.state_dict()
    state.update({name: torch.from_numpy(w) for name, w in replaced.items()})
    ref.load_state_dict(state)
    return ref


def _graph_files(manifest: Manifest) -> dict[str, str]:
    files = dict(manifest.graphs)
    if manifest.vision is not None:
        files["vision"] = manifest.vision.graph
    return files


def _graph_bytes(out: Path, graph: str) -> int:
    """A graph with its external weights (decoder: the tied embedding counts in embed.bin)."""
    return sum(p.stat().st_size for p in out.iterdir() if p.name.startswith(graph))
