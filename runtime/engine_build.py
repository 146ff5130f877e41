"""`edgekv build`: one TensorRT engine per graph of a bundle, on the device that will run it.

Written against TensorRT 10's Python API (Builder, OnnxParser, IBuilderConfig, one optimization
profile, timing cache) and NOT executed in this project's CI, which has no TensorRT and no GPU.
Shapes are static except the decoder's chunk axis, whose profile spans c = 1..chunk.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgekv.export.manifest import Manifest, load_manifest, sha256_file
from edgekv.export.trt_check import CHUNK_AXES
from edgekv.runtime.build_options import BuildOptions
from edgekv.runtime.errors import EdgeKVError
from edgekv.runtime.trt_import import import_tensorrt

ENGINE_DIR = "engines"
TIMING_CACHE = "timing.cache"  # kept beside the engines: later builds on this device are faster


def build_bundle(bundle_dir: str | Path, options: BuildOptions, log=print) -> Manifest:  # noqa: ANN001
    """Build every graph's engine, save them under bundle/engines, record them in the manifest."""
    trt = import_tensorrt()  # first: without TensorRT nothing else is worth doing
    bundle_dir = Path(bundle_dir)
    manifest = load_manifest(bundle_dir)
    out = bundle_dir / ENGINE_DIR
    out.mkdir(exist_ok=True)
    cache_path = out / TIMING_CACHE
    logger = trt.Logger(trt.Logger.WARNING)
    records: dict[str, Any] = {}
    for name, onnx_file in sorted(manifest.graphs.items()):
        chunk_inputs = ({manifest.inputs[k]: a for k, a in CHUNK_AXES.items()}
                        if name == "decoder" else {})
        log(f"building {name} from {onnx_file} ({'fp16' if options.fp16 else 'fp32'}, "
            f"workspace {options.workspace_mb} MiB)")
        engine = _build_one(trt, logger, bundle_dir / onnx_file, chunk_inputs, manifest.chunk,
                            options, cache_path)
        path = out / f"{name}.engine"
        path.write_bytes(engine)
        records[name] = {"file": f"{ENGINE_DIR}/{path.name}", "sha256": sha256_file(path)}
    engines = {
        "tensorrt_version": trt.__version__,
        "precision": "fp16" if options.fp16 else "fp32",
        "workspace_mb": options.workspace_mb,
        "profile": options.profile,
        "chunk_range": [1, manifest.chunk],
        "timing_cache": f"{ENGINE_DIR}/{TIMING_CACHE}",
        "graphs": records,
    }
    manifest = dataclasses.replace(manifest, engines=engines)
    manifest.save(bundle_dir)
    return manifest


def _build_one(trt, logger, onnx_path: Path, chunk_inputs: dict[str, int], chunk: int,  # noqa: ANN001
               options: BuildOptions, cache_path: Path) -> bytes:
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # resolves external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeKVError(f"TensorRT cannot parse {onnx_path.name}: {errors} "
                          "(run `edgekv check` for a static report)")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    config.add_optimization_profile(_profile(builder, network, chunk_inputs, chunk))
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeKVError(f"TensorRT failed to build an engine for {onnx_path.name} "
                          "(see the TensorRT log above)")
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _profile(builder, network, chunk_inputs: dict[str, int], chunk: int):  # noqa: ANN001, ANN202
    """One profile: the chunk axis from 1 to `chunk` (optimised for `chunk`), all else fixed."""
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        axis = chunk_inputs.get(tensor.name)
        if axis is None:
            if any(d < 0 for d in shape):
                raise EdgeKVError(f"input {tensor.name} has a dynamic axis other than the chunk "
                                  "axis; re-export the bundle (edgekv check explains)")
            profile.set_shape(tensor.name, shape, shape, shape)
            continue
        axis %= len(shape)
        lo, hi = list(shape), list(shape)
        lo[axis], hi[axis] = 1, chunk
        profile.set_shape(tensor.name, lo, hi, hi)
    return profile
