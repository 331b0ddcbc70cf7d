"""Real integer inference: ONNX export and ONNX Runtime's int8 quantization.

Fake quantization (:mod:`mlcomp.quant.qat`) shows what int8 does to
accuracy; only an integer kernel shows what it does to size and time. This
module takes a PyTorch model to ONNX (``torch.onnx.export``, the
``torch.export``-based exporter), quantizes it with ONNX Runtime's
quantization tool, and runs it with ``onnxruntime.InferenceSession``:

* **static** (:func:`quantize_onnx` with ``mode="static"``) — weights *and*
  activations in 8 bits. Activation ranges come from running calibration
  inputs through the model (``method`` = ``"minmax"``, ``"entropy"`` or
  ``"percentile"``); the graph is written in QDQ form
  (QuantizeLinear/DequantizeLinear pairs around each operator), which ONNX
  Runtime fuses into integer kernels (QLinearConv, QGemm, ...). Weights are
  signed int8, symmetric, per output channel by default; activations
  unsigned int8 with a zero point.
* **dynamic** — weights stored in int8; each activation's range is measured
  at run time, for every batch. Nothing to calibrate, but the extra pass
  costs time, and ONNX Runtime's dynamic convolutions (ConvInteger) are not
  its fast path.

``torch.ao.quantization`` is deprecated and not used here. ONNX and ONNX
Runtime are imported only when these functions are called.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = [
    "export_onnx",
    "quantize_onnx",
    "OnnxModule",
    "node_names",
    "profile_onnx",
    "strip_metadata",
    "METHODS",
]

METHODS = ("minmax", "entropy", "percentile")


def export_onnx(
    model: nn.Module, path: str | os.PathLike, example: torch.Tensor
) -> Path:
    """Write ``model`` to a single ONNX file with a dynamic batch dimension.

    ``example`` is one input batch (its shape fixes every dimension but the
    first). The weights are stored inside the file, so its size is the
    model's size. The exporter's debugging metadata (stack traces with the
    local paths of the source files, FX node dumps) is removed, so the same
    model gives the same bytes on every machine and the file reveals nothing
    about the one that wrote it. The graph is checked with ``onnx.checker``.

    >>> import tempfile
    >>> path = export_onnx(nn.Linear(3, 2), tempfile.mkdtemp() + "/m.onnx",
    ...                    torch.zeros(1, 3))
    >>> OnnxModule(path)(torch.zeros(5, 3)).shape
    torch.Size([5, 2])
    """
    path = Path(path)
    if not isinstance(example, torch.Tensor) or example.dim() < 1:
        raise ValueError("example must be a tensor with a batch dimension")
    was_training = model.training
    model.eval()
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    finally:
        model.train(was_training)
    return strip_metadata(path)


def strip_metadata(path: str | os.PathLike) -> Path:
    """Remove the exporter's debugging metadata from an ONNX file and check it.

    Stack traces with local paths and FX node dumps: without them the same
    model gives the same bytes on every machine.

    >>> import tempfile
    >>> path = export_onnx(nn.Linear(2, 2), tempfile.mkdtemp() + "/m.onnx",
    ...                    torch.zeros(1, 2))
    >>> strip_metadata(path) == path
    True
    """
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    del proto.graph.metadata_props[:]
    for node in proto.graph.node:
        del node.metadata_props[:]
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


class _Reader:
    """ONNX Runtime calibration reader over an input tensor, in batches, or
    over a list of feeds (dicts from input name to array) for models with
    several inputs."""

    def __init__(self, inputs, name: str, batch_size: int):
        if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], dict):
            self.batches = iter(
                [{k: np.asarray(v) for k, v in f.items()} for f in inputs]
            )
            return
        arr = inputs.detach().cpu().numpy().astype(np.float32)
        self.batches = iter(
            [{name: arr[i : i + batch_size]} for i in range(0, len(arr), batch_size)]
        )

    def get_next(self):
        return next(self.batches, None)


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def quantize_onnx(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calibration: torch.Tensor | None = None,
    *,
    mode: str = "static",
    per_channel: bool = True,
    method: str = "minmax",
    exclude: tuple[str, ...] | list[str] = (),
    reduce_range: bool = False,
    batch_size: int = 64,
    op_types: tuple[str, ...] | list[str] | None = None,
) -> Path:
    """Quantize the fp32 ONNX model ``src`` to int8 and write it to ``dst``.

    ``mode`` is ``"static"`` (needs ``calibration``, a tensor of model
    inputs, e.g. a few hundred training images, or for a model with several
    inputs a list of feeds, dicts from input name to array) or ``"dynamic"``.
    ``exclude`` lists node names (see :func:`node_names`) to leave in fp32;
    ``op_types`` (e.g. ``("MatMul",)``) quantizes only nodes of those types.
    ``reduce_range`` uses 7-bit weights, ONNX Runtime's remedy for CPUs
    without VNNI instructions, whose fast u8 x s8 multiply-add can saturate;
    this module's sessions need no such remedy, since they ask ONNX Runtime
    for exact products on those CPUs (see :class:`OnnxModule`). The model
    is first run through ONNX Runtime's pre-processing (shape inference and
    graph optimisation), as its documentation asks; where its symbolic shape
    inference cannot follow a dynamic shape (a Transformer's position slice),
    ONNX's own shape inference is used instead.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> src = export_onnx(nn.Linear(64, 64), d + "/m.onnx", torch.zeros(1, 64))
    >>> dst = quantize_onnx(src, d + "/q.onnx", torch.randn(128, 64))
    >>> os.path.getsize(src) / os.path.getsize(dst) > 2
    True
    """
    import logging

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"no ONNX model at {src}")
    if mode not in ("static", "dynamic"):
        raise ValueError(f"mode must be 'static' or 'dynamic', got {mode!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if mode == "static" and (calibration is None or len(calibration) == 0):
        raise ValueError("static quantization needs calibration inputs")
    known = set(node_names(src))
    unknown = [name for name in exclude if name not in known]
    if unknown:
        raise ValueError(f"no nodes named {unknown} in {src.name}; see node_names()")
    quiet = {n: logging.getLogger(n) for n in (
        "onnxruntime", "onnxruntime.tools.symbolic_shape_infer",
        "onnxruntime.quantization.shape_inference",
    )}  # fmt: skip
    levels = {n: lg.level for n, lg in quiet.items()}
    for lg in quiet.values():
        lg.setLevel(logging.ERROR)  # its shape-inference chatter, not errors
    src, dst = src.resolve(), dst.resolve()  # the work runs in a scratch folder
    try:
        with scratch_cwd():
            _quantize(src, dst, calibration, mode, per_channel, method, exclude,
                      reduce_range, batch_size, op_types)  # fmt: skip
    finally:
        for n, lg in quiet.items():
            lg.setLevel(levels[n])
    return dst


@contextlib.contextmanager
def scratch_cwd():
    """Run the body in a fresh temporary working directory, removed after.

    ONNX Runtime's shape inference and quantizers write temporary files
    (``sym_shape_infer_temp.onnx``, ``<uuid>.data``) into the current
    directory and do not always remove them; this keeps them out of the
    user's folder.

    >>> before = os.getcwd()
    >>> with scratch_cwd():
    ...     os.getcwd() != before
    True
    >>> os.getcwd() == before
    True
    """
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(before)


def _quantize(src, dst, calibration, mode, per_channel, method, exclude,
              reduce_range, batch_size, op_types) -> None:  # fmt: skip
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre))
        except Exception as err:  # symbolic shape inference gave up
            if "symbolic shape inference" not in str(err):
                raise
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        if mode == "static":
            quantize_static(
                str(pre),
                str(dst),
                _Reader(calibration, _input_name(pre), batch_size),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude),
                op_types_to_quantize=list(op_types) if op_types else None,
                calibrate_method={
                    "minmax": CalibrationMethod.MinMax,
                    "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile,
                }[method],
            )
        else:
            quantize_dynamic(
                str(pre),
                str(dst),
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude),
                op_types_to_quantize=list(op_types) if op_types else None,
                # outputs of ONNX Runtime's fused nodes (Attention, ...) have no
                # type that ONNX's shape inference can give: they are float
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )


def _session(
    path: Path, threads: int, profile_prefix: str | None = None, exact: bool = True
):
    import onnxruntime as ort

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    # On x86 CPUs without VNNI, ONNX Runtime's fast int8 products (u8 x s8,
    # pairs summed in 16 bits) saturate; this option makes it use exact u8 x u8
    # products there, so int8 results are the same with or without VNNI.
    # (exact=False keeps ONNX Runtime's default, for timing that path alone.)
    if exact:
        options.add_session_config_entry("session.x64quantprecision", "1")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModule(nn.Module):
    """An ONNX Runtime session that looks like a module: tensor in, tensor out.

    So :func:`mlcomp.train.evaluate` and :func:`mlcomp.measure.latency` work
    on an ONNX model unchanged. ``threads`` is ONNX Runtime's intra-op thread
    count (the analogue of ``torch.set_num_threads``).

    Integer products are exact on every x86 CPU: without VNNI, ONNX
    Runtime's fast path sums pairs of u8 x s8 products in 16 bits, which
    saturates (255 * 127 * 2 > 32767), so the session turns on its exact
    u8 x u8 path (``session.x64quantprecision``) there. Float kernels still
    dispatch on the instruction set, so float outputs may differ between
    CPUs in their last digits.

    >>> import tempfile
    >>> net = nn.Sequential(nn.Linear(3, 2))
    >>> path = export_onnx(net, tempfile.mkdtemp() + "/m.onnx", torch.zeros(1, 3))
    >>> x = torch.randn(4, 3)
    >>> torch.allclose(OnnxModule(path, threads=1)(x), net(x), atol=1e-6)
    True
    """

    def __init__(self, path: str | os.PathLike, threads: int = 2):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.path}")
        self.session = _session(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])

    def extra_repr(self) -> str:
        return f"{self.path.name}, {os.path.getsize(self.path):,} bytes"


def node_names(path: str | os.PathLike, op_type: str | None = None) -> list[str]:
    """Names of the nodes of an ONNX graph (of one ``op_type`` if given), in order.

    >>> import tempfile
    >>> path = export_onnx(nn.Sequential(nn.Linear(3, 2), nn.ReLU()),
    ...                    tempfile.mkdtemp() + "/m.onnx", torch.zeros(1, 3))
    >>> len(node_names(path, "Relu"))
    1
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if op_type is None or n.op_type == op_type]


def profile_onnx(
    path: str | os.PathLike, example: torch.Tensor, runs: int = 50, threads: int = 2
) -> pd.DataFrame:
    """Mean kernel time per node (ms) over ``runs`` runs, from ONNX Runtime's profiler.

    Columns ``node``, ``op`` (the kernel ONNX Runtime actually ran, after its
    fusions, e.g. ``QLinearConv``) and ``ms``, slowest first.

    >>> import tempfile
    >>> path = export_onnx(nn.Linear(3, 2), tempfile.mkdtemp() + "/m.onnx",
    ...                    torch.zeros(1, 3))
    >>> list(profile_onnx(path, torch.zeros(4, 3), runs=2).columns)
    ['node', 'op', 'ms']
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    with tempfile.TemporaryDirectory() as tmp:
        session = _session(Path(path), threads, profile_prefix=str(Path(tmp) / "p"))
        feed = {session.get_inputs()[0].name: example.detach().numpy()}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    total: dict[tuple[str, str], float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"].removesuffix("_kernel_time")
            total[node, e["args"].get("op_name", "")] += e["dur"] / 1e3 / runs
    rows = [{"node": n, "op": op, "ms": ms} for (n, op), ms in total.items()]
    frame = pd.DataFrame(rows, columns=["node", "op", "ms"])
    return frame.sort_values("ms", ascending=False, ignore_index=True)
