"""The vision half of a multimodal export: vision.onnx, the manifest's vision spec, and the
image+text validation against HF. `exporter.export_model` calls it when given one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekv.export.families import adapter_for
from edgekv.export.families.vlm import VisionLanguageAdapter, VisionSetup
from edgekv.export.manifest import Manifest
from edgekv.export.vision_graph import DATA_FILE, GRAPH_FILE, INPUT, OUTPUT, trace_vision
from edgekv.export.vision_spec import VisionSpec
from edgekv.export.vlm_loading import VisionLanguageModel
from edgekv.runtime.errors import BudgetError, ModelError

Log = Callable[[str], None]


@dataclass
class VisionExport:
    vlm: VisionLanguageModel
    setup: VisionSetup

    def adapter(self) -> VisionLanguageAdapter:
        family, adapter = adapter_for(self.vlm.model)
        if not isinstance(adapter, VisionLanguageAdapter):
            raise ModelError(f"{family} is a text family; it has no vision graph")
        return adapter

    def check(self) -> None:
        """Refuse image settings the model cannot take (--image-size, --tiling) before any
        graph is traced: the spec is worked out again, cheaply, when the graph is written."""
        vlm = self.vlm
        self.adapter().image_spec(vlm.model, vlm.image_processor, vlm.tokenizer, self.setup)

    def write(self, out_dir: Path, manifest: Manifest, torch_dtype: Any, opset: int,
              log: Log) -> Manifest:
        """Trace vision.onnx into `out_dir`; returns the manifest with its vision spec."""
        vlm, adapter = self.vlm, self.adapter()
        preprocess, layout = adapter.image_spec(vlm.model, vlm.image_processor, vlm.tokenizer,
                                                self.setup)
        setup = replace(self.setup, image_size=(preprocess.height, preprocess.width))
        encoder, input_shape = adapter.vision_encoder(vlm.model, setup)
        log(f"tracing vision graph ({' x '.join(map(str, input_shape))} -> "
            f"{layout.tokens_per_frame} tokens per frame)")
        output_shape = trace_vision(encoder, input_shape, torch_dtype, opset, out_dir)
        if output_shape[1] != layout.tokens_per_frame:
            raise ModelError(f"vision graph gives {output_shape[1]} tokens per frame, the "
                             f"prompt layout expects {layout.tokens_per_frame}")
        spec = VisionSpec(graph=GRAPH_FILE, input=INPUT, output=OUTPUT, input_shape=input_shape,
                          output_shape=output_shape, frames_per_call=setup.frames_per_call,
                          weights_bytes=(out_dir / DATA_FILE).stat().st_size,
                          preprocess=preprocess, layout=layout)
        tokenizer = replace(manifest.tokenizer, chat_template=vlm.chat_template)
        scheme = "mrope" if manifest.dims.mrope_section else "rope"
        return replace(manifest, vision=spec, position_scheme=scheme, tokenizer=tokenizer)

    def validate(self, bundle_dir: Path, tolerance: float, log: Log,
                 steps: tuple[Any, Any] | None = None) -> dict[str, Any]:
        """Image + question through the bundle vs HF; raises ModelError beyond `tolerance`.
        An int4 bundle passes `steps` (its DecoderStep with the float weights, and with the
        dequantized ones) and is checked as its text is (`_validate_quantized`)."""
        from edgekv.export.validate_vlm import compare, sample_picture
        from edgekv.runtime.bundle import Bundle

        manifest = Bundle.open(bundle_dir).manifest
        picture = sample_picture(manifest.vision)
        try:
            if steps is not None:
                return self._validate_quantized(bundle_dir, picture, steps, tolerance, log)
            diff, tokens = compare(bundle_dir, self.vlm, [picture])
        except BudgetError as exc:
            raise ModelError(
                f"the image check (a picture and a question, the whole prompt in the cache) "
                f"does not fit --budget {manifest.budget}; export with a larger --budget, or "
                "with --no-validate to skip the check") from exc
        log(f"validation: image + text, max |logit diff| vs HF = {diff:.2e} over {tokens} "
            f"tokens (tolerance {tolerance:.0e})")
        if not diff <= tolerance:
            raise ModelError(f"exported vision + decoder graphs differ from the HF model by "
                             f"{diff:.3e} > {tolerance:.0e}; bundle not written")
        return {"image_max_abs_logit_diff": diff, "image_prompt_tokens": tokens}

    def _validate_quantized(self, bundle_dir: Path, picture: Any, steps: tuple[Any, Any],
                            tolerance: float, log: Log) -> dict[str, Any]:
        """int4: the float-weight step with the vision graph vs HF at fp32's tolerance, then
        the bundle vs its dequantized weights at `tolerance` (the text check's two steps)."""
        from edgekv.export.exporter import DEFAULT_TOLERANCE
        from edgekv.export.validate_vlm import compare_quantized

        structure, diff, tokens = compare_quantized(bundle_dir, self.vlm, [picture], *steps)
        log(f"validation: image + text, max |logit diff| vs HF with the float weights = "
            f"{structure:.2e} (eager), vs the dequantized weights = {diff:.2e} over {tokens} "
            f"tokens")
        if not structure <= DEFAULT_TOLERANCE["fp32"]:
            raise ModelError(f"the exported vision graph and decoder, with float weights, differ "
                             f"from the HF model by {structure:.3e} > "
                             f"{DEFAULT_TOLERANCE['fp32']:.0e} on an image prompt; bundle not "
                             "written")
        if not diff <= tolerance:
            raise ModelError(f"the int4 decoder differs from its dequantized weights by "
                             f"{diff:.3e} > {tolerance:.0e} on an image prompt; bundle not "
                             "written")
        return {"image_max_abs_logit_diff": diff, "image_float_weights_vs_hf": structure,
                "image_prompt_tokens": tokens}
