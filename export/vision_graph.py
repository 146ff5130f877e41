"""Trace a family's vision encoder into `vision.onnx`: one fixed input shape, weights aside.

The shape never changes (frames per call, channels and size are fixed at export), so TensorRT
builds one engine without an optimization profile. Weights go to `vision.onnx.data`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

GRAPH_FILE = "vision.onnx"
DATA_FILE = "vision.onnx.data"
INPUT = "pixel_values"
OUTPUT = "image_embeds"


def trace_vision(
    encoder: nn.Module, input_shape: list[int], dtype: torch.dtype, opset: int, out_dir: Path
) -> list[int]:
    """Write vision.onnx (+ .data) into `out_dir`; returns the output shape."""
    encoder = encoder.to(dtype).eval()
    example = torch.zeros(input_shape, dtype=dtype)
    with torch.no_grad():
        output_shape = list(encoder(example).shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            encoder,
            (example,),
            input_names=[INPUT],
            output_names=[OUTPUT],
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    onnx.save_model(program.model_proto, out_dir / GRAPH_FILE, save_as_external_data=True,
                    all_tensors_to_one_file=True, location=DATA_FILE, size_threshold=1024)
    return output_shape
