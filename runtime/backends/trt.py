"""Native TensorRT backend: the engine from `edgekv build`, run with execute_async_v3.

Every tensor address is a device buffer bound once (past K/V are the DeviceKV tensors; outputs
are flat buffers sized for the largest chunk), one CUDA stream carries the copies and the
execution, and only attn_mass and the logits come back to the host.
Written against TensorRT 10's Python API and NOT executed in this project's CI (no TensorRT,
no GPU there); tools/device_check.py is how it is verified on a device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekv.export.manifest import Manifest, sha256_file
from edgekv.runtime.backends.base import StepOutput
from edgekv.runtime.backends.device_buffers import TORCH_DTYPES, DeviceBuffers
from edgekv.runtime.backends.kv_routing import route_kv_to_device
from edgekv.runtime.cache import KVCache
from edgekv.runtime.device_kv import DeviceKV
from edgekv.runtime.errors import BundleError, EdgeKVError
from edgekv.runtime.trt_import import import_tensorrt


def engine_path(bundle_dir: Path, manifest: Manifest, graph: str = "decoder") -> Path:
    """The built engine of `graph`, checked against its sha256; explains how to build it."""
    record = manifest.engines.get("graphs", {}).get(graph)
    if not record:
        raise EdgeKVError(f"the bundle has no TensorRT engine for {graph}: run "
                          f"`edgekv build {bundle_dir}` on this device first")
    path = bundle_dir / record["file"]
    if not path.is_file() or sha256_file(path) != record["sha256"]:
        raise BundleError(f"engine {record['file']} is missing or does not match its sha256; "
                          f"rebuild with `edgekv build {bundle_dir}`")
    return path


class TrtBackend:
    name = "trt"

    def __init__(self, bundle_dir: Path, manifest: Manifest, cache: KVCache,
                 last_logits_only: bool = False) -> None:
        trt = import_tensorrt()
        logger = trt.Logger(trt.Logger.WARNING)
        blob = engine_path(bundle_dir, manifest).read_bytes()
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
        if self.engine is None:
            raise EdgeKVError("TensorRT could not load the engine (built by another TensorRT "
                              "version or GPU?); rebuild it with `edgekv build` on this device")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        d = manifest.dims
        self.kv = DeviceKV.allocate(d.num_layers, d.num_kv_heads, manifest.budget, d.head_dim,
                                    TORCH_DTYPES[manifest.dtype], "cuda")
        self.buffers = DeviceBuffers.allocate(manifest, "cuda")
        self.names_in, self.names_out = manifest.inputs, manifest.outputs
        self.last_logits_only = last_logits_only
        self._c = 0
        route_kv_to_device(cache, self.kv, self._latest_kv)
        # The buffers never move, so every address is set once.
        bound = {**self.buffers.inputs, **self.buffers.outputs,
                 "past_keys": self.kv.keys, "past_values": self.kv.values}
        for name, tensor in bound.items():
            real = self.names_in.get(name) or self.names_out[name]
            self.context.set_tensor_address(real, tensor.data_ptr())

    def _latest_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.buffers.shaped("new_keys", self._c), self.buffers.shaped("new_values", self._c)

    def run(
        self,
        inputs_embeds: np.ndarray,
        chunk_pos: np.ndarray,
        slot_pos: np.ndarray,
        slot_bias: np.ndarray,
        mass_weight: np.ndarray,
        last_only: bool = False,
    ) -> StepOutput:
        c = inputs_embeds.shape[1]
        shapes = self.buffers.input_shapes(c)
        with torch.cuda.stream(self.stream):
            self.buffers.load({"inputs_embeds": inputs_embeds, "chunk_pos": chunk_pos,
                               "slot_pos": slot_pos, "slot_bias": slot_bias,
                               "mass_weight": mass_weight})
            for name in ("inputs_embeds", "chunk_pos", "mass_weight"):
                self.context.set_input_shape(self.names_in[name], shapes[name])
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EdgeKVError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            self._c = c
            out = self.buffers.step_output(c, self.last_logits_only)
        self.stream.synchronize()
        return out
