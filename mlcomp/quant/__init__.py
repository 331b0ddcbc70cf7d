"""Quantization: fewer bits per weight and per activation.

* :mod:`~mlcomp.quant.core` — the uniform quantizer as pure tensor
  functions: :func:`qparams` (four observers), :func:`quantize`,
  :func:`dequantize`, :func:`fake_quantize` (straight-through gradient),
  :func:`sqnr`.
* :mod:`~mlcomp.quant.qat` — the model-level verb
  ``quantize_(model, QuantConfig(...), filter_fn)`` for simulated
  (fake-quant) post-training quantization and quantization-aware training;
  :func:`calibrate_`, :func:`remove_`, :func:`sensitivity`.
* :mod:`~mlcomp.quant.nonuniform` — k-means weight sharing (:func:`kmeans_`)
  with trainable centroids; binary and ternary weights.
* :mod:`~mlcomp.quant.ecsq` — a uniform step with entropy-constrained level
  choice (:func:`step_levels`), the quantizer of the ``.mlc`` file's step
  values and of the NNC standard's kind.
* :mod:`~mlcomp.quant.kmeans` — 1-D k-means (:func:`kmeans_1d`) and the
  nearest-centroid rule, shared with the ``.mlc`` file's codebooks.
* :mod:`~mlcomp.quant.mixed` — a bit width per layer under a size budget.
* :mod:`~mlcomp.quant.runtime` — real int8: ONNX export, ONNX Runtime
  static/dynamic quantization, sessions wrapped as modules, per-node
  profiles.
Codes of any width are packed into bytes by :func:`mlcomp.coding.pack_bits`.

>>> import torch
>>> from mlcomp import coding, quant
>>> w = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
>>> scale, zero = quant.qparams(w, bits=4, scheme="symmetric", axis=0)
>>> codes = quant.quantize(w, scale, zero, bits=4, scheme="symmetric", axis=0)
>>> data = coding.pack_bits((codes + 8).flatten(), 4)  # 4-bit codes, 2 per byte
>>> back = torch.from_numpy(coding.unpack_bits(data, 4, codes.numel()) - 8)
>>> len(data), torch.equal(back.reshape(codes.shape), codes)
(1024, True)
>>> 17 < quant.sqnr(w, quant.dequantize(codes, scale, zero, axis=0)) < 22
True
"""

from mlcomp.quant import core, ecsq, kmeans, mixed, nonuniform, qat, runtime
from mlcomp.quant.core import (
    dequantize,
    fake_quantize,
    observe_range,
    qparams,
    qrange,
    quantize,
    range_qparams,
    sqnr,
)
from mlcomp.quant.ecsq import STEP_LAMBDA, qp_step, step_levels
from mlcomp.quant.kmeans import kmeans_1d, nearest_centroid
from mlcomp.quant.mixed import allocate_bits
from mlcomp.quant.nonuniform import binarize, codebooks, kmeans_, ternarize
from mlcomp.quant.qat import (
    ActivationQuantizer,
    QuantConfig,
    WeightQuantizer,
    calibrate_,
    capture_inputs,
    quantize_,
    remove_,
    round_params_,
    sensitivity,
)
from mlcomp.quant.runtime import (
    OnnxModule,
    export_onnx,
    node_names,
    profile_onnx,
    quantize_onnx,
)

__all__ = [
    "ActivationQuantizer",
    "OnnxModule",
    "QuantConfig",
    "STEP_LAMBDA",
    "WeightQuantizer",
    "allocate_bits",
    "binarize",
    "calibrate_",
    "capture_inputs",
    "codebooks",
    "core",
    "dequantize",
    "ecsq",
    "export_onnx",
    "fake_quantize",
    "kmeans_",
    "kmeans",
    "kmeans_1d",
    "mixed",
    "nearest_centroid",
    "node_names",
    "nonuniform",
    "observe_range",
    "profile_onnx",
    "qat",
    "qp_step",
    "qparams",
    "qrange",
    "quantize",
    "quantize_",
    "quantize_onnx",
    "range_qparams",
    "remove_",
    "round_params_",
    "runtime",
    "sensitivity",
    "sqnr",
    "step_levels",
    "ternarize",
]
