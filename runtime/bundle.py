"""Open a bundle on the device: manifest (checked), embedding table (memory-mapped), tokenizer."""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekv.export.manifest import Manifest, check_table_size, load_manifest, named_files
from edgekv.runtime.errors import BundleError
from edgekv.runtime.text import TextCodec

# KV (and activation) dtype per bundle dtype; int4 bundles quantize weights only.
NUMPY_DTYPES = {"fp32": np.float32, "fp16": np.float16, "int4": np.float32}


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    embedding: np.ndarray  # [V, H], memory-mapped from embed.bin
    text: TextCodec
    _table_fd: int | None = field(default=None, repr=False)  # embed.bin, for `_read_rows`

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> Bundle:
        path = Path(path)
        manifest = load_manifest(path, verify=verify)
        # Verifying hashed every file. Without it, name a missing one here rather than let
        # ONNX Runtime fail on it.
        if not verify:
            for rel in dict.fromkeys([*named_files(manifest), *manifest.files]):
                if not (path / rel).is_file():
                    raise BundleError(f"bundle file {rel} is missing from {path}")
        embedding = _map_table(path, manifest, verify)
        text = TextCodec.from_bundle(path, manifest.tokenizer)
        # Its model vocabulary larger than the table: another model's tokenizer (added tokens
        # are not counted: some checkpoints list unused ones past the embedding's rows).
        tokens = text.tokenizer.get_vocab_size(with_added_tokens=False)
        if tokens > len(embedding):
            raise BundleError(f"{manifest.tokenizer.file} has {tokens} tokens, more than the "
                              f"{len(embedding)} rows of {manifest.embedding.file}: it belongs to "
                              "another model; re-export the bundle")
        return cls(path, manifest, embedding, text)

    @property
    def kv_dtype(self) -> type:
        """The graph's float dtype (what new K/V come out as)."""
        return NUMPY_DTYPES[self.manifest.dtype]

    @property
    def cache_dtype(self) -> type:
        """What the cache stores: the graph's dtype, or int8 (manifest `kv_quant`)."""
        return np.int8 if self.manifest.kv_quant == "int8" else self.kv_dtype

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Token ids [n] -> embeddings [1, n, H] in the graph's dtype."""
        ids = np.asarray(ids, dtype=np.int64)
        table = self.manifest.embedding
        if (table.shared_with_lm_head and table.lm_head_input) or not hasattr(os, "preadv"):
            # the lm_head reads every page of it anyway (and Windows has no preadv)
            rows = self.embedding[ids]
        else:
            rows = self._read_rows(ids)
        scale = self.manifest.dims.embedding_multiplier
        if scale != 1.0:
            rows = rows * np.asarray(scale, dtype=rows.dtype)
        return np.ascontiguousarray(rows[None])

    def _read_rows(self, ids: np.ndarray) -> np.ndarray:
        """The rows of `ids`, read from embed.bin, not through the memory map: a page fault on
        the map also maps the cached pages around it (fault-around), and a 2k-token prompt made
        93 of the 108 MiB of SmolLM2's table resident (docs/bench.md, "Token rows read,
        not mapped")."""
        table = self.embedding
        if np.any((ids < 0) | (ids >= table.shape[0])):
            raise IndexError(f"token id out of range for a vocabulary of {table.shape[0]}")
        rows = np.empty((len(ids), table.shape[1]), dtype=table.dtype)
        stride = rows.strides[0]
        if self._table_fd is None:  # opened once: an open per decode step cost 45 us
            self._table_fd = os.open(self.path / self.manifest.embedding.file, os.O_RDONLY)
            weakref.finalize(self, os.close, self._table_fd)
        for row, token in zip(rows, ids.tolist(), strict=True):
            if os.preadv(self._table_fd, [row], table.offset + token * stride) != stride:
                raise BundleError(f"{self.manifest.embedding.file} is shorter than its "
                                  "manifest says")
        return rows


def _map_table(path: Path, manifest: Manifest, verify: bool) -> np.ndarray:
    """embed.bin memory-mapped as the manifest's [V, H] (`load_manifest` checked its size when
    it verified the bundle)."""
    if not verify:
        check_table_size(path, manifest)
    table = manifest.embedding
    try:
        return np.memmap(path / table.file, dtype=np.dtype(table.dtype), mode="r",
                         shape=tuple(table.shape))
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot map {table.file}: {exc}") from exc
