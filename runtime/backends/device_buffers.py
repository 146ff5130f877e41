"""Fixed device buffers for one decoder graph: inputs and outputs sized for the largest chunk.

Outputs are flat buffers; a chunk of c tokens uses their first elements, viewed in its shape, so
the device addresses never change and can be bound once. Only `attn_mass` and the logits (all
positions, or the last one) are copied back to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgekv.export.manifest import Manifest
from edgekv.runtime.backends.base import StepOutput
from edgekv.runtime.backends.kv_routing import host_placeholder

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass
class DeviceBuffers:
    inputs: dict[str, torch.Tensor]  # contract name -> device tensor at the largest chunk
    outputs: dict[str, torch.Tensor]  # contract name -> flat device tensor
    manifest: Manifest

    @classmethod
    def allocate(cls, manifest: Manifest, device: str | torch.device) -> DeviceBuffers:
        d, C, B = manifest.dims, manifest.chunk, manifest.budget
        kv = TORCH_DTYPES[manifest.dtype]
        meta = (d.num_layers, d.num_kv_heads, B)

        def empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return torch.empty(shape, dtype=dtype, device=device)

        inputs = {
            "inputs_embeds": empty((1, C, d.hidden_size), kv),
            "chunk_pos": empty((C,), torch.int64),
            "slot_pos": empty(meta, torch.int64),
            "slot_bias": empty(meta, torch.float32),
            "mass_weight": empty((C,), torch.float32),
        }
        n_kv = d.num_layers * d.num_kv_heads
        outputs = {
            "logits": empty((C * d.vocab_size,), torch.float32),
            "new_keys": empty((n_kv * C * d.head_dim,), kv),
            "new_values": empty((n_kv * C * d.head_dim,), kv),
            "attn_mass": empty((n_kv * (B + C),), torch.float32),
        }
        return cls(inputs, outputs, manifest)

    def input_shapes(self, c: int) -> dict[str, tuple[int, ...]]:
        shapes = {k: tuple(v.shape) for k, v in self.inputs.items()}
        shapes.update(inputs_embeds=(1, c, shapes["inputs_embeds"][2]), chunk_pos=(c,),
                      mass_weight=(c,))
        return shapes

    def output_shapes(self, c: int) -> dict[str, tuple[int, ...]]:
        d, B = self.manifest.dims, self.manifest.budget
        kv = (d.num_layers, d.num_kv_heads, c, d.head_dim)
        return {"logits": (1, c, d.vocab_size), "new_keys": kv, "new_values": kv,
                "attn_mass": kv[:2] + (B + c,)}

    def load(self, host: dict[str, np.ndarray]) -> None:
        """Copy this step's small host inputs into the front of the device buffers."""
        for name, array in host.items():
            flat = self.inputs[name].view(-1)[: array.size]
            flat.copy_(torch.from_numpy(np.ascontiguousarray(array)).view(-1), non_blocking=True)

    def shaped(self, name: str, c: int) -> torch.Tensor:
        """The output `name` of a c-token chunk, as a view of its flat device buffer."""
        shape = self.output_shapes(c)[name]
        return self.outputs[name][: int(np.prod(shape))].view(shape)

    def step_output(self, c: int, last_logits_only: bool) -> StepOutput:
        """Host copies of attn_mass and logits; K/V stay on the device (zero-width stand-ins)."""
        logits = self.shaped("logits", c)
        logits = logits[:, -1:] if last_logits_only else logits
        d = self.manifest.dims
        kv_dtype = np.float16 if self.manifest.dtype == "fp16" else np.float32
        placeholder = host_placeholder(d.num_layers, d.num_kv_heads, c, kv_dtype)
        mass = self.shaped("attn_mass", c).cpu().numpy()
        return StepOutput(logits=logits.cpu().numpy(), new_keys=placeholder,
                          new_values=placeholder, attn_mass=mass)
