"""Run the bundle's vision graph: preprocessed frames in, language-space embeddings out.

The graph has one input shape ([frames_per_call, ...]); frames are sent in groups of that size,
the last group padded with zero frames whose outputs are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekv.export.vision_spec import VisionSpec
from edgekv.runtime.backends.ort_load import load_graph
from edgekv.runtime.errors import BundleError, ImageError


@dataclass
class VisionEncoder:
    session: object  # onnxruntime.InferenceSession
    spec: VisionSpec
    dtype: type

    @classmethod
    def open(cls, bundle_dir: str | Path, spec: VisionSpec | None, dtype: type = np.float32,
             threads: int = 0) -> VisionEncoder:
        if spec is None:
            raise BundleError("this bundle has no vision graph (a text-only export); export a "
                              "vision-language model to feed images")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        session = load_graph(Path(bundle_dir) / spec.graph, sess_options=opts,
                             providers=["CPUExecutionProvider"])
        return cls(session, spec, dtype)

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """[n, *frame_shape] -> [n, tokens_per_frame, hidden]."""
        per_call, frame_shape = self.spec.frames_per_call, tuple(self.spec.input_shape[1:])
        if tuple(frames.shape[1:]) != frame_shape:
            raise ImageError(f"preprocessed frames have shape {frames.shape[1:]}, the vision "
                             f"graph takes {frame_shape}")
        outputs = []
        for start in range(0, len(frames), per_call):
            group = frames[start : start + per_call]
            batch = np.zeros((per_call, *frame_shape), dtype=self.dtype)
            batch[: len(group)] = group
            out = self.session.run([self.spec.output], {self.spec.input: batch})[0]
            outputs.append(out[: len(group)])
        return np.concatenate(outputs)
