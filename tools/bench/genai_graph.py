"""onnxruntime-genai's decoder graph driven by plain ONNX Runtime, as genai's runtime drives it.

The model builder's graph takes input_ids, an attention_mask as long as everything fed so far,
and past_key_values.N.key/value buffers of a fixed max length that GroupQueryAttention also
writes as present.N.* (genai's "past_present_share_buffer"). Binding each buffer as both input
and output once, then feeding ids with a mask of the right length, is all a decode step needs.
Setting `length` back rewinds the context: later rows are overwritten.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class GenaiGraph:
    """The builder's decoder graph with its KV buffers bound once (genai_config.json says
    the names, the head layout and that past and present share one buffer)."""

    def __init__(self, model_dir: str, max_len: int, threads: int) -> None:
        with open(os.path.join(model_dir, "genai_config.json")) as f:
            config = json.load(f)
        decoder = config["model"]["decoder"]
        if not config.get("search", {}).get("past_present_share_buffer", False):
            raise ValueError(f"{model_dir}: this genai model does not share past and present "
                             "buffers (search.past_present_share_buffer), which the driver needs")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.path.join(model_dir, decoder["filename"]), opts,
                                            providers=["CPUExecutionProvider"])
        names = decoder["inputs"]
        self.ids_name, self.mask_name = names["input_ids"], names["attention_mask"]
        expected = {self.ids_name, self.mask_name}
        shape = (1, decoder["num_key_value_heads"], max_len, decoder["head_size"])
        self.bind = self.session.io_binding()
        outs = decoder["outputs"]
        kinds = {i.name: i.type for i in self.session.get_inputs()}
        out_kinds = {o.name: o.type for o in self.session.get_outputs()}
        # fp32 for the CPU builder's models; a GPU build's fp16 tensors are taken as they come
        kv_dtype = _DTYPES.get(kinds.get(names["past_key_names"] % 0), np.float32)
        self.logits_name, self.vocab = outs["logits"], config["model"]["vocab_size"]
        self.logits_dtype = _DTYPES.get(out_kinds.get(self.logits_name), np.float32)
        self.logits = np.empty((1, 0, self.vocab), dtype=self.logits_dtype)  # rebound per chunk
        pairs = ((names["past_key_names"], outs["present_key_names"]),
                 (names["past_value_names"], outs["present_value_names"]))
        self.buffers = []  # kept alive: the binding holds their addresses
        for layer in range(decoder["num_hidden_layers"]):
            for past, present in pairs:
                buf = np.zeros(shape, dtype=kv_dtype)
                self.buffers.append(buf)
                expected.add(past % layer)
                for bind, name in ((self.bind.bind_input, past % layer),
                                   (self.bind.bind_output, present % layer)):
                    bind(name, "cpu", 0, kv_dtype, buf.shape, buf.ctypes.data)
        extra = set(kinds) - expected
        if extra:
            raise ValueError(f"{model_dir}: graph inputs the driver does not feed: {sorted(extra)}")
        self.max_len, self.length = max_len, 0

    def run(self, ids: list[int]) -> np.ndarray:
        """Feed `ids` after the first `length` tokens; returns the last row's logits [V]."""
        if self.length + len(ids) > self.max_len:  # GroupQueryAttention would write past the end
            raise ValueError(f"{self.length} + {len(ids)} tokens exceed the buffers' "
                             f"{self.max_len} rows")
        self.length += len(ids)
        self.bind.bind_cpu_input(self.ids_name, np.asarray([ids], dtype=np.int64))
        self.bind.bind_cpu_input(self.mask_name, np.ones((1, self.length), dtype=np.int64))
        if self.logits.shape[1] != len(ids):
            self.logits = np.empty((1, len(ids), self.vocab), dtype=self.logits_dtype)
            self.bind.bind_output(self.logits_name, "cpu", 0, self.logits_dtype, self.logits.shape,
                                  self.logits.ctypes.data)
        self.session.run_with_iobinding(self.bind)
        return self.logits[0, -1]
