"""ONNX Runtime backend with IOBinding: the cache buffers are bound once, without copies.

The past K/V inputs are OrtValues over the cache's own numpy arrays, so the policy's in-place
edits are what the next call reads; outputs go to buffers preallocated per chunk length.
On a GPU the same binding works with device buffers (CUDA / TensorRT execution providers);
here only the CPU provider runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgekv.export.manifest import LIVE_ROWS, LM_HEAD, LOGIT_ROWS, POS_SHIFT, Manifest
from edgekv.runtime.backends.base import StepOutput
from edgekv.runtime.backends.graph_io import Port, check_graph_io
from edgekv.runtime.backends.ort_load import load_graph
from edgekv.runtime.bundle import NUMPY_DTYPES
from edgekv.runtime.cache import KVCache


class OrtBackend:
    name = "ort"

    def __init__(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        cache: KVCache,
        embedding: np.ndarray,
        providers: list[str] | None = None,
        threads: int = 0,
    ) -> None:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No memory pattern: it plans one block per input shape (each chunk length) and keeps
        # them all. The arena stays: without it every run mallocs and page-faults its
        # activations. 2k-token prefill then 128 tokens, budget 2048, 2 threads (docs/bench.md,
        # "Levers measured"): int4 peak 758 -> 596 MiB, prefill 579 -> 586 tok/s; arena off
        # instead: 600 MiB but prefill 413 tok/s.
        opts.enable_mem_pattern = False
        if threads:
            opts.intra_op_num_threads = threads
        table = manifest.embedding
        # A tied lm_head listed as a graph input: the memory-mapped embedding is its weight,
        # so the matrix exists once in memory (token lookup reads the same pages). Bound as an
        # input, it is not a constant, so ONNX Runtime does not prepack a copy. Otherwise
        # (`--packed-lm-head`) ONNX Runtime loads it from embed.bin and packs its own.
        self._shared = None
        if table.shared_with_lm_head and table.lm_head_input:
            self._shared = ort.OrtValue.ortvalue_from_numpy(embedding)
            # ORT warns at every open that an initializer listed as an input is not a
            # constant; that is the point here, so only errors are logged.
            opts.log_severity_level = 3
        self.session = load_graph(bundle_dir / manifest.graphs["decoder"], sess_options=opts,
                                  providers=providers or ["CPUExecutionProvider"])
        arrays = cache.buffers or (cache.keys, cache.values)  # with scratch rows, if any
        check_graph_io(manifest, _ports(self.session.get_inputs()),
                       _ports(self.session.get_outputs()), arrays[0].dtype,
                       NUMPY_DTYPES[manifest.dtype])
        self.io = manifest.inputs, manifest.outputs
        self.cache = cache
        self.binding = self.session.io_binding()
        # The cache as OrtValues over its own arrays, bound once: one per input (the whole
        # buffer, or a view of each layer for per-layer bundles).
        self._kv: list[tuple[str, ort.OrtValue]] = []
        for which, array in zip(("past_keys", "past_values"), arrays, strict=True):
            names = manifest.kv_input_names(which)
            # per layer: one view each (a one-layer model too, whose one name is layer 0's)
            parts = list(array) if manifest.kv_layout == "per_layer" else [array]
            if manifest.attention == "gqa":  # the kernel's rank, [1, Hkv, rows, D]
                parts = [part[None] for part in parts]
            self._kv += [(n, ort.OrtValue.ortvalue_from_numpy(a)) for n, a in zip(names, parts,
                                                                                  strict=True)]
        for name, value in self._kv:  # bindings persist across runs: the cache never moves
            self.binding.bind_ortvalue_input(name, value)
        if manifest.attention == "gqa":
            # GroupQueryAttention's present K/V alias its past ones (ONNX Runtime's shared
            # buffer): it writes the chunk into the scratch rows and copies nothing else.
            for which, array in zip(("present_keys", "present_values"), arrays, strict=True):
                for name, layer in zip(manifest.present_names(which), array, strict=True):
                    self.binding.bind_output(name, "cpu", 0, layer.dtype, [1, *layer.shape],
                                             layer.ctypes.data)
        if self._shared is not None:
            self.binding.bind_ortvalue_input(LM_HEAD, self._shared)
        self._outputs: dict[tuple[int, int], StepOutput] = {}
        self._dims = manifest.dims
        self._kv_dtype = NUMPY_DTYPES[manifest.dtype]  # new K/V: the graph's dtype, any cache
        self._rows = manifest.inputs.get(LOGIT_ROWS)  # None: the graph gives every row
        self._gqa = manifest.attention == "gqa"
        self._live = manifest.inputs.get(LIVE_ROWS)  # None: the graph attends to every slot
        # Rotated-key bundles take the heads' position shifts where slot_pos would go.
        self._slot_pos = manifest.inputs.get("slot_pos") or manifest.inputs[POS_SHIFT]
        self._last_row = {c: np.array([c - 1], dtype=np.int64)
                          for c in range(1, manifest.chunk + 1)}

    def _output_buffers(self, c: int, rows: int) -> StepOutput:
        if (c, rows) not in self._outputs:
            dims, cache = self._dims, self.cache
            kv = (dims.num_layers, dims.num_kv_heads, c, dims.head_dim)
            self._outputs[c, rows] = StepOutput(
                logits=np.empty((1, rows, dims.vocab_size), dtype=np.float32),
                new_keys=np.empty(kv, dtype=self._kv_dtype),
                new_values=np.empty(kv, dtype=self._kv_dtype),
                attn_mass=np.empty(kv[:2] + (cache.capacity + c,), dtype=np.float32),
            )
        return self._outputs[c, rows]

    def run(
        self,
        inputs_embeds: np.ndarray,
        chunk_pos: np.ndarray,
        slot_pos: np.ndarray,
        slot_bias: np.ndarray,
        mass_weight: np.ndarray,
        last_only: bool = False,
    ) -> StepOutput:
        names_in, names_out = self.io
        b = self.binding
        b.bind_cpu_input(names_in["inputs_embeds"], np.ascontiguousarray(inputs_embeds))
        b.bind_cpu_input(names_in["chunk_pos"], chunk_pos)
        b.bind_cpu_input(self._slot_pos, slot_pos)
        b.bind_cpu_input(names_in["slot_bias"], slot_bias)
        b.bind_cpu_input(names_in["mass_weight"], mass_weight)
        c = inputs_embeds.shape[1]
        rows = c
        if self._rows is not None:
            row_ids = self._last_row[c] if last_only else np.arange(c, dtype=np.int64)
            b.bind_cpu_input(self._rows, row_ids)
            rows = len(row_ids)
        if self._live is not None:
            b.bind_cpu_input(self._live, np.array([self.cache.live_rows], dtype=np.int64))
        out = self._output_buffers(c, rows)
        for key in ("logits", "new_keys", "new_values", "attn_mass"):
            buf = getattr(out, key)
            b.bind_output(names_out[key], "cpu", 0, buf.dtype, list(buf.shape),
                          buf.ctypes.data)
        self.session.run_with_iobinding(b)
        if self._gqa:  # the kernel left the chunk's rotated keys after the live rows
            live = self.cache.live_rows if self._live is not None else self.cache.capacity
            out.rotated_keys = self.cache.buffers[0][:, :, live:live + c]
            out.stored_values = self.cache.buffers[1][:, :, live:live + c]
            out.rotated_pos = chunk_pos[None] + slot_pos[:, :1]  # each layer's shift
        return out


def _ports(args: list) -> list[Port]:
    return [Port(a.name, a.shape, a.type) for a in args]
