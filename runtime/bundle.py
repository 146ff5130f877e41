"""Open a bundle on the device: manifest (checked), embedding table (memory-mapped), tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekv.export.manifest import Manifest, load_manifest
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

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> Bundle:
        path = Path(path)
        manifest = load_manifest(path, verify=verify)
        table = manifest.embedding
        try:
            embedding = np.memmap(path / table.file, dtype=np.dtype(table.dtype), mode="r",
                                  shape=tuple(table.shape))
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot map {table.file}: {exc}") from exc
        return cls(path, manifest, embedding, TextCodec.from_bundle(path, manifest.tokenizer))

    @property
    def kv_dtype(self) -> type:
        return NUMPY_DTYPES[self.manifest.dtype]

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Token ids [n] -> embeddings [1, n, H] in the graph's dtype."""
        rows = self.embedding[np.asarray(ids, dtype=np.int64)]
        scale = self.manifest.dims.embedding_multiplier
        if scale != 1.0:
            rows = rows * np.asarray(scale, dtype=rows.dtype)
        return np.ascontiguousarray(rows[None])
