"""ONNX Runtime on the GPU (TensorRT or CUDA execution provider) with IOBinding on device memory.

Inputs, outputs and the past K/V are bound as CUDA pointers of torch tensors, so the cache never
leaves the device; only attn_mass and the logits are copied back. Written against ONNX
Runtime's IOBinding API; in this project's CI only the CPU provider exists, so this class is
not executed there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from edgekv.export.manifest import LOGIT_ROWS, Manifest
from edgekv.runtime.backends.base import StepOutput
from edgekv.runtime.backends.device_buffers import TORCH_DTYPES, DeviceBuffers
from edgekv.runtime.backends.kv_routing import route_kv_to_device
from edgekv.runtime.backends.ort_load import load_graph
from edgekv.runtime.cache import KVCache
from edgekv.runtime.device_kv import DeviceKV
from edgekv.runtime.errors import EdgeKVError

_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}


def gpu_providers(manifest: Manifest, bundle_dir: Path, use_tensorrt: bool) -> list:
    """TensorRT EP (engine and timing caches beside the bundle) when asked, then CUDA."""
    providers: list = []
    if use_tensorrt and "TensorrtExecutionProvider" in ort.get_available_providers():
        h, name = manifest.dims.hidden_size, manifest.inputs
        c = manifest.chunk

        def shapes(n: int) -> str:
            rows = f",{name[LOGIT_ROWS]}:{n}" if LOGIT_ROWS in name else ""  # every row (run)
            return f"{name['inputs_embeds']}:1x{n}x{h},{name['chunk_pos']}:{n},"\
                   f"{name['mass_weight']}:{n}{rows}"

        cache_dir = str(bundle_dir / "engines" / "ort-trt")
        providers.append(("TensorrtExecutionProvider", {
            "trt_fp16_enable": manifest.dtype == "fp16",
            "trt_engine_cache_enable": True, "trt_engine_cache_path": cache_dir,
            "trt_timing_cache_enable": True, "trt_timing_cache_path": cache_dir,
            "trt_profile_min_shapes": shapes(1), "trt_profile_opt_shapes": shapes(c),
            "trt_profile_max_shapes": shapes(c),
        }))
    providers.append(("CUDAExecutionProvider", {"device_id": 0}))
    return providers


class OrtGpuBackend:
    name = "ort-gpu"

    def __init__(self, bundle_dir: Path, manifest: Manifest, cache: KVCache,
                 use_tensorrt: bool = True, last_logits_only: bool = False) -> None:
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EdgeKVError("onnxruntime has no CUDAExecutionProvider here: install "
                              "onnxruntime-gpu (on a Jetson, the wheel from the Jetson Zoo)")
        self.session = load_graph(bundle_dir / manifest.graphs["decoder"],
                                  providers=gpu_providers(manifest, bundle_dir, use_tensorrt))
        d = manifest.dims
        self.kv = DeviceKV.allocate(d.num_layers, d.num_kv_heads, manifest.budget, d.head_dim,
                                    TORCH_DTYPES[manifest.dtype], "cuda")
        self.buffers = DeviceBuffers.allocate(manifest, "cuda")
        self.names_in, self.names_out = manifest.inputs, manifest.outputs
        self.kv_names = {w: manifest.kv_input_names(w) for w in ("past_keys", "past_values")}
        self.per_layer = manifest.kv_layout == "per_layer"
        self.binding = self.session.io_binding()
        self.last_logits_only = last_logits_only
        self._c = 0
        route_kv_to_device(cache, self.kv, self._latest_kv)

    def _latest_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.buffers.shaped("new_keys", self._c), self.buffers.shaped("new_values", self._c)

    def _bind(self, real: str, tensor: torch.Tensor, shape: tuple[int, ...], output: bool) -> None:
        bind = self.binding.bind_output if output else self.binding.bind_input
        bind(real, "cuda", 0, _NP[tensor.dtype], list(shape), tensor.data_ptr())

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
        self.buffers.load({"inputs_embeds": inputs_embeds, "chunk_pos": chunk_pos,
                           "slot_pos": slot_pos, "slot_bias": slot_bias,
                           "mass_weight": mass_weight})
        torch.cuda.current_stream().synchronize()  # ORT runs on its own stream
        for name, shape in self.buffers.input_shapes(c).items():
            self._bind(self.names_in[name], self.buffers.inputs[name], shape, output=False)
        for which, tensor in (("past_keys", self.kv.keys), ("past_values", self.kv.values)):
            names = self.kv_names[which]
            parts = tensor if self.per_layer else [tensor]  # a one-layer model too
            for name, part in zip(names, parts, strict=True):
                self._bind(name, part, tuple(part.shape), output=False)
        if LOGIT_ROWS in self.names_in:  # every row: the device buffers are sized for them
            self.binding.bind_cpu_input(self.names_in[LOGIT_ROWS], np.arange(c, dtype=np.int64))
        for name, shape in self.buffers.output_shapes(c).items():
            self._bind(self.names_out[name], self.buffers.outputs[name], shape, output=True)
        self.session.run_with_iobinding(self.binding)
        self._c = c
        return self.buffers.step_output(c, self.last_logits_only)
