"""The bundle manifest: the contract between the exporter and the runtime, as plain data.

It round-trips to JSON (`to_json` / `from_json`) and imports nothing beyond the standard
library, so the runtime on the device can read it without torch or transformers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekv.export.vision_spec import VisionSpec
from edgekv.runtime.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

# Attention logits of empty slots and of future chunk tokens get this bias. It is finite (fp16
# NaNs come from -inf) and far enough below any real logit that its softmax weight is exactly 0.
EMPTY_SLOT_BIAS = -30000.0
# Optional decoder input (ONNX Runtime bundles): which chunk rows get logits. Prefill needs only
# the last row; the lm_head over all 64 rows of a chunk was 29 of 338 ms (budget 2048, 1 thread).
LOGIT_ROWS = "logit_rows"
# Fused-attention bundles: rows [0, live_rows) of every cache buffer hold all valid slots
# ([1] int64). The kernel attends to those rows only and writes the chunk right after them: a
# cache still filling (a prompt, the start of a stream) costs what it holds, not the budget.
LIVE_ROWS = "live_rows"
POS_SHIFT = "pos_shift"  # takes slot_pos's place when keys are cached rotated ([L, Hkv])
LM_HEAD = "lm_head.weight"  # the tied output projection's weight, shared with embed.bin


@dataclass(frozen=True)
class DecoderDims:
    """What the decoder graph computes with; enough to rebuild it from its weights."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    rope_inv_freq: list[float]
    rope_attention_scaling: float = 1.0
    rope_type: str = "default"
    max_position_embeddings: int = 0
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    hidden_act: str = "silu"
    tie_word_embeddings: bool = True
    embedding_multiplier: float = 1.0
    # M-RoPE (Qwen2-VL): frequencies per position component (temporal, height, width); their
    # sum is head_dim / 2. Empty for ordinary RoPE.
    mrope_section: list[int] = field(default_factory=list)

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class EmbeddingTable:
    """The token-embedding matrix, stored once as raw row-major bytes.

    With tied embeddings the decoder's lm_head initializer points at the same file, so the
    matrix exists once on disk and (with the ORT backend's shared initializer) once in memory.
    """

    file: str
    dtype: str
    shape: list[int]
    shared_with_lm_head: bool = False  # the graph's lm_head.weight points at this file
    # The graph also lists lm_head.weight as an input (ONNX Runtime bundles): the runtime binds
    # the memory-mapped table there, and ONNX Runtime then does not prepack a second copy.
    lm_head_input: bool = False


@dataclass(frozen=True)
class TokenizerInfo:
    file: str = "tokenizer.json"
    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    add_bos_token: bool = False


@dataclass(frozen=True)
class Manifest:
    model: str
    family: str
    dims: DecoderDims
    budget: int
    chunk: int
    dtype: str
    position_mode: str
    embedding: EmbeddingTable
    tokenizer: TokenizerInfo
    graphs: dict[str, str]
    inputs: dict[str, str]
    outputs: dict[str, str]
    opset: int
    files: dict[str, str] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    # TensorRT engines made on the device by `edgekv build` (empty until then; files written
    # before this field existed read as empty, so the schema version is unchanged).
    engines: dict[str, Any] = field(default_factory=dict)
    # How weights are quantized ("" = not at all); int4 bundles use an ONNX Runtime contrib op.
    quant_format: str = ""
    # "ort": may use ONNX Runtime contrib ops (fused RoPE, MatMulNBits); "tensorrt": standard
    # ONNX ops only, what TensorRT's parser takes.
    target: str = "tensorrt"
    # "stacked": past_keys/past_values are one input each, [L,Hkv,B,D]. "per_layer": L inputs
    # each, [Hkv,B,D], named `kv_input_names` (ONNX Runtime copies every slice it takes of a
    # stacked input, 16 of 82 ms of a decode step at budget 2048; views of the runtime's
    # buffer bound per layer cost nothing).
    kv_layout: str = "stacked"
    # Rows of the RoPE cos/sin table inside the graph: every position must be below it.
    # 0: positions are turned into angles in the graph (no limit).
    rope_table: int = 0
    schema_version: int = SCHEMA_VERSION
    edgekv_version: str = ""
    # Multimodal bundles: the vision graph, preprocessing and image-token layout (None: text).
    vision: VisionSpec | None = None
    # "rope": chunk_pos [c], slot_pos [L,Hkv,B]. "mrope": a leading axis of 3 on both.
    position_scheme: str = "rope"
    # "graph": keys cached before RoPE, rotated to slot_pos in the graph on every call.
    # "cached": keys cached rotated; the graph takes pos_shift [L,Hkv] instead of slot_pos and
    # the runtime keeps them rotated (runtime/key_rotation.py; ONNX Runtime bundles only).
    key_rope: str = "graph"
    # int4 bundles: the MatMulNBits compute, "int8" (activations in int8 blocks) or "fp32".
    quant_compute: str = ""
    # "graph": attention in standard ops. "gqa": one GroupQueryAttention per layer (ONNX
    # Runtime, key_rope "cached"): each layer's past K/V input has `chunk` scratch rows after
    # the budget, where the chunk is written, and the outputs `present_names` alias them.
    attention: str = "graph"
    # False: the graph does not compute the attention mass and its `attn_mass` output is zeros;
    # policies that read it (h2o, snapkv, ...) refuse the bundle.
    attn_mass: bool = True
    # "int8": the cache holds int8 K/V, one scale per layer for each ([k_scale, v_scale] per
    # layer in `kv_scales`); gqa bundles read it as it is (runtime/kv_codec.py). "": float.
    kv_quant: str = ""
    kv_scales: list[list[float]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        # a hand-edited manifest is refused field by field (manifest_read.py)
        from edgekv.export.manifest_read import parse_manifest

        return parse_manifest(json.loads(text))

    def kv_input_names(self, which: str) -> list[str]:
        """The graph inputs that carry `which` ("past_keys" / "past_values"): one, or one per
        layer ("NAME.0", "NAME.1", ...)."""
        name = self.inputs[which]
        if self.kv_layout == "per_layer":
            return layer_names(name, self.dims.num_layers)
        return [name]

    @property
    def scratch_rows(self) -> int:
        """Rows after the budget in each cache buffer (fused attention writes the chunk there)."""
        return self.chunk if self.attention == "gqa" else 0

    def present_names(self, which: str) -> list[str]:
        """Fused-attention outputs that alias the cache: "present_keys" / "present_values"."""
        return layer_names(which, self.dims.num_layers)

    def with_files(self, bundle_dir: Path) -> Manifest:
        """A copy that records the sha256 of every file in the bundle but the manifest."""
        digests = {
            p.relative_to(bundle_dir).as_posix(): sha256_file(p)
            for p in sorted(bundle_dir.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME
        }
        return dataclasses.replace(self, files=digests)

    def save(self, bundle_dir: Path) -> None:
        # written aside, then moved over: `edgekv build` rewrites a working bundle's manifest,
        # and an interrupted write must not leave it half a manifest
        path = Path(bundle_dir) / MANIFEST_NAME
        part = path.with_name(f".{MANIFEST_NAME}.partial")
        try:
            part.write_text(self.to_json() + "\n")
            os.replace(part, path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(bundle_dir: str | Path, verify: bool = True) -> Manifest:
    """Read a bundle's manifest; with `verify`, check every file against its sha256."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"no bundle at {bundle_dir} (expected a directory made by edgekv export)")
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_dir} has no {MANIFEST_NAME}; it is not an edgekv bundle")
    try:
        manifest = Manifest.from_json(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    except OSError as exc:  # unreadable (permissions, I/O error)
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if verify:
        # A file the runtime opens but the manifest records no sha256 for would go unchecked.
        unlisted = [rel for rel in named_files(manifest) if rel not in manifest.files]
        if unlisted:
            raise BundleError(f"{MANIFEST_NAME} records no sha256 for {', '.join(unlisted)}; "
                              "it was edited: re-export the bundle")
        for rel, expected in manifest.files.items():
            file = bundle_dir / rel
            if not file.is_file():
                raise BundleError(f"bundle file {rel} is missing from {bundle_dir}")
            if sha256_file(file) != expected:
                raise BundleError(
                    f"bundle file {rel} does not match the sha256 in the manifest "
                    "(corrupt or modified); re-export the bundle"
                )
        check_table_size(bundle_dir, manifest)
    return manifest


def check_table_size(bundle_dir: Path, manifest: Manifest) -> None:
    """embed.bin must be exactly the manifest's [V, H] table: a shorter file fails to map (and
    to load as the tied lm_head), a longer one means the manifest describes another table."""
    table = manifest.embedding
    rows, width = table.shape
    expected = rows * width * TABLE_ITEMSIZE[table.dtype]
    try:
        size = (bundle_dir / table.file).stat().st_size
    except OSError as exc:
        raise BundleError(f"cannot read {table.file}: {exc.strerror or exc}") from exc
    if size != expected:
        raise BundleError(f"{table.file} is {size} bytes; the manifest's {table.dtype} "
                          f"{table.shape} table is {expected}: the file is truncated or belongs "
                          "to another bundle; re-export the bundle")


def layer_names(name: str, num_layers: int) -> list[str]:
    """One graph input or output per layer: "NAME.0", "NAME.1", ..."""
    return [f"{name}.{i}" for i in range(num_layers)]


def named_files(manifest: Manifest) -> list[str]:
    """The bundle files the manifest names and the runtime opens (graphs, embedding table,
    tokenizer): decoder.onnx.data is named only inside decoder.onnx."""
    names = [*manifest.graphs.values(), manifest.embedding.file, manifest.tokenizer.file]
    if manifest.vision is not None:
        names.append(manifest.vision.graph)
    return list(dict.fromkeys(names))


# bytes per value of each dtype embed.bin may hold (int4 bundles keep a float32 table)
TABLE_ITEMSIZE = {"float32": 4, "float16": 2}
