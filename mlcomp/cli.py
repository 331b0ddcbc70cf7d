"""The ``mlcomp`` command line.

    mlcomp zoo [NAME ...]               verify (or train) the reference models
    mlcomp zoo --retrain [NAME ...]     re-make the shipped weights, bit for bit
    mlcomp numerics [--install-kernel]  the numerics in effect; the Jupyter kernel
    mlcomp compress MODEL -o OUT.mlc    prune, share and entropy-code a state dict
    mlcomp inspect OUT.mlc              per-tensor table of a compressed file
    mlcomp decompress OUT.mlc -o MODEL  back to a safetensors (or .pt) state dict
    mlcomp speech                       synthesize the keyword-spotting data (once)
    mlcomp listen FILE.wav ...          the keyword each recording says (chapter 8)

MODEL is a safetensors file or a PyTorch ``.pt``/``.pth`` state dict, read
with ``torch.load(weights_only=True)``: never unpickled code. Also available
as ``python -m mlcomp``. Errors (a missing file, a damaged ``.mlc``, a
tensor that cannot be stored) are reported in one line with exit status 1;
bad arguments exit with status 2.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import torch

from mlcomp import numerics, utils, zoo
from mlcomp.coding import CorruptFileError
from mlcomp.utils import atomic_open

__all__ = ["main", "read_state_dict", "write_state_dict"]


class CommandError(Exception):
    """A failure the user can fix; printed as one line, exit status 1."""


def _quality(info: dict) -> str:
    """What a zoo record says of its model's quality, in a few words."""
    if "val_bpc" in info:
        return f"held-out {info['val_bpc']:.3f} bits per character"
    if "test_psnr" in info:
        bpp, db = info["test_bpp"], info["test_psnr"]
        return f"held-out {bpp:.3f} bits per pixel at {db:.2f} dB"
    return f"test accuracy {info['test_accuracy']:.4f}"


def _zoo(args: argparse.Namespace) -> int:
    unknown = [n for n in args.names if n not in zoo.RECIPES]
    if unknown:
        print(
            f"mlcomp zoo: unknown model(s) {unknown}; "
            f"choose from {sorted(zoo.RECIPES)}",
            file=sys.stderr,
        )
        return 2
    if args.jobs < 1:
        raise CommandError(f"--jobs must be at least 1, got {args.jobs}")
    if args.retrain:
        try:
            records = zoo.retrain_shipped(
                args.names or None, progress=not args.quiet, jobs=args.jobs
            )
        except RuntimeError as err:
            raise CommandError(str(err)) from err
        for info in records:
            print(f"{info['name']}: {_quality(info)}, "
                  f"trained in {info['train_seconds']} s, "
                  f"sha256 {info['sha256'][:16]}")  # fmt: skip
        print(f"written to {zoo.SHIPPED_DIR}")
        return 0
    if args.jobs > 1:
        try:
            zoo.ensure(args.names or None, jobs=args.jobs, progress=not args.quiet)
        except RuntimeError as err:
            raise CommandError(str(err)) from err
    for name in args.names or sorted(zoo.RECIPES):
        start = time.perf_counter()
        zoo.pretrained(name, progress=not args.quiet)
        info = zoo.record(name)
        print(
            f"{name}: {_quality(info)}, trained in "
            f"{info['train_seconds']} s, ready in {time.perf_counter() - start:.1f} s"
        )
    return 0


def _numerics(args: argparse.Namespace) -> int:
    if args.install_kernel:
        folder = numerics.install_kernel()
        print(f"installed the Jupyter kernel {numerics.KERNEL_NAME!r} in {folder}")
        return 0
    report = numerics.report()
    state = "pinned" if report["pinned"] else "not pinned"
    print(f"numerics: {state}; ATen kernels {report['aten_capability']} on a "
          f"{report['cpu_capability']} {report['cpu_vendor']} CPU, MKL branch "
          f"{report['mkl_branch']}, {report['threads']} threads")  # fmt: skip
    ref = numerics.REFERENCE
    if report["book_digits"]:
        print("  the book's digits: this CPU computes as the one its outputs come from")
    else:
        print(f"  not the book's digits (made pinned on an {ref['cpu_vendor']} CPU, "
              f"MKL branch {ref['mkl_branch']}): the asserts hold, last digits "
              "of trained models may differ")  # fmt: skip
    for key, value in report["variables"].items():
        print(f"  {key}={value if value is not None else '(unset)'}")
    return 0


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a ``.pt`` state dict, loaded without pickle.

    A checkpoint that wraps its weights as ``{"state_dict": {...}}`` or
    ``{"model": {...}}`` is unwrapped; anything else that is not a flat
    mapping from names to tensors is refused with the offending entry named.

    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/m.pt"
    >>> torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    >>> read_state_dict(path)
    {'w': tensor([1., 1.])}
    """
    path = Path(_existing(path))
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise CommandError(
                f"{path} is not a readable safetensors file: {err}"
            ) from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad or unsafe file
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CommandError(
            f"{path} is not a state dict that loads with weights_only=True "
            f"({type(err).__name__}: {first})"
        ) from err
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CommandError(f"{path} holds a {type(obj).__name__}, not a state dict")
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CommandError(
                f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor"
            )
    return dict(obj)


def write_state_dict(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write ``state`` as safetensors, or with ``torch.save`` for ``.pt``/``.pth``.

    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/m.safetensors"
    >>> write_state_dict({"w": torch.ones(2)}, path)
    >>> read_state_dict(path)
    {'w': tensor([1., 1.])}
    """
    path = Path(path)
    if path.suffix not in (".pt", ".pth", ".safetensors"):
        raise CommandError(
            f"cannot tell the format of {path}: name it .safetensors or .pt"
        )
    with atomic_open(path) as f:  # all or nothing, even on a full disk
        if path.suffix == ".safetensors":
            from safetensors.torch import save

            f.write(save({k: v.contiguous() for k, v in state.items()}))
        else:
            torch.save(state, f)


def _compress(args: argparse.Namespace) -> int:
    from mlcomp import pipeline

    out = Path(args.output)
    step_options = [f"--{o.replace('_', '-')}" for o in ("qp", "step", "rd_lambda")
                    if getattr(args, o) is not None]  # fmt: skip
    if step_options and args.recipe != "step":
        raise CommandError(f"{' and '.join(step_options)}: only with --recipe step")
    if args.qp is not None and args.step is not None:
        raise CommandError("give --qp or --step, not both")
    _refuse_overwriting(out, args.model)
    state = read_state_dict(args.model)
    try:
        if args.recipe == "lossless":
            from mlcomp.coding import save_compressed

            save_compressed(state, out, progress=not args.quiet)
        elif args.recipe == "step":
            from mlcomp import quant

            qp = -32 if args.qp is None else args.qp
            pipeline.compress_state_dict(
                state, out, prune_amount=args.prune,
                step=args.step if args.step is not None else quant.qp_step(qp),
                rd_lambda=quant.STEP_LAMBDA if args.rd_lambda is None
                else args.rd_lambda,
                coder=args.coder or "auto", progress=not args.quiet,
            )  # fmt: skip
        else:
            pipeline.compress_state_dict(
                state, out, prune_amount=args.prune,
                conv_bits=args.conv_bits or args.bits or 8,
                fc_bits=args.fc_bits or args.bits or 5,
                coder=args.coder or "huffman", progress=not args.quiet,
            )  # fmt: skip
    except (ValueError, TypeError) as err:  # e.g. a tensor of an unsupported dtype
        raise CommandError(f"cannot compress {args.model}: {err}") from err
    before = sum(t.numel() * t.element_size() for t in state.values())
    after = out.stat().st_size
    print(
        f"{out}: {after:,} bytes, {before / max(after, 1):.1f}x smaller than the "
        f"{before:,} bytes of tensors in {args.model}"
    )
    return 0


def upper_bound(x: float, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits, rounded up: a printed bound stays one.

    >>> upper_bound(0.24301), upper_bound(0.0), upper_bound(1e-7)
    ('0.244', '0', '1.00e-7')
    """
    if x <= 0:
        return "0"
    exponent = math.floor(math.log10(x)) - (digits - 1)
    q = Fraction(x) / Fraction(10) ** exponent  # exact: no rounding below x
    mantissa = math.ceil(q)
    return f"{Decimal(mantissa).scaleb(exponent):g}"  # exact decimal digits


def _inspect(args: argparse.Namespace) -> int:
    import pandas as pd

    from mlcomp.coding import inspect

    table = inspect(_existing(args.file))
    entries = int(table["entries"].sum())
    shown = table.drop(columns=["value bytes", "index bytes", "codebook bytes"])
    shown["max error"] = [upper_bound(e) for e in table["max error"]]  # never below
    with pd.option_context(
        "display.max_rows", None, "display.max_columns", None, "display.width", 250
    ):
        print(shown)
    print(
        f"{len(table)} tensors, {entries:,} entries: "
        f"{int(table['value bytes'].sum()):,} bytes of values, "
        f"{int(table['index bytes'].sum()):,} of indices, "
        f"{int(table['codebook bytes'].sum()):,} of codebooks, "
        f"{table.attrs['header_bytes']:,} of header; "
        f"{table.attrs['file_bytes']:,} bytes in all, "
        f"{8 * table.attrs['file_bytes'] / max(entries, 1):.3f} bits per entry"
    )
    return 0


def _decompress(args: argparse.Namespace) -> int:
    from mlcomp.coding import load_compressed

    _refuse_overwriting(Path(args.output), _existing(args.file))
    state = load_compressed(
        args.file, progress=not args.quiet, max_elements=args.max_elements
    )
    write_state_dict(state, args.output)
    print(f"{args.output}: {len(state)} tensors")
    return 0


def _speech(args: argparse.Namespace) -> int:
    import json

    from mlcomp import speech

    try:
        for split in speech.SPLITS:
            data = speech.load(split, progress=not args.quiet)
            manifest = json.loads(speech.manifest_path(split).read_text())
            print(
                f"{split}: {len(data):,} clips, {manifest['bytes'] / 2**20:.1f} MiB, "
                f"{len(set(data.voices)):,} voices (noise included); "
                f"generated in {manifest['seconds']} s"
            )
    except speech.SynthesisError as err:
        raise CommandError(str(err)) from None
    return 0


def _listen(args: argparse.Namespace) -> int:
    from mlcomp import kws, speech
    from mlcomp.audio import AudioError, prepare

    if args.model is not None:
        try:
            net = kws.load(_existing(args.model))
        except ValueError as err:
            raise CommandError(str(err)) from None
    else:
        net = kws.default_model()
    failed = 0
    for path in args.files:
        try:
            p = kws.probabilities(net, prepare(_existing(path)))
        except (AudioError, CommandError, OSError) as err:
            print(f"mlcomp listen: error: {err}", file=sys.stderr)  # names the file
            failed += 1
            continue
        order = p.argsort()[::-1][: args.top]
        answer = ", ".join(f"{speech.LABELS[i]} {p[i]:.3f}" for i in order)
        print(f"{path}: {answer}")
    return 1 if failed else 0


def _look(args: argparse.Namespace) -> int:
    from mlcomp import coding, datasets, models, vision

    if args.model is not None:
        path = _existing(args.model)
        try:
            if str(path).endswith(".mlc"):
                state = coding.load_compressed(path)
            else:
                state = read_state_dict(path)
            net = models.LeNet5()
            net.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).strip().split("\n")[0]
            raise CommandError(f"{path}: not a LeNet-5 state dict: {first}") from None
        net.eval()
    else:
        net = vision.default_model()
    failed = 0
    for path in args.files:
        try:
            p = vision.probabilities(net, vision.prepare(vision.load_image(path)))
        except ValueError as err:  # ImageError names the file; prepare does not
            message = (
                str(err) if isinstance(err, vision.ImageError) else f"{path}: {err}"
            )
            print(f"mlcomp look: error: {message}", file=sys.stderr)
            failed += 1
            continue
        order = p.argsort()[::-1][: args.top]
        classes = datasets.FASHION_MNIST_CLASSES
        print(f"{path}: " + ", ".join(f"{classes[i]} {p[i]:.3f}" for i in order))
    return 1 if failed else 0


def _text(args: argparse.Namespace) -> int:
    from mlcomp import lm, textcode

    source = _existing(args.file)
    out = Path(args.output)
    _refuse_overwriting(out, source)
    data = Path(source).read_bytes()
    if args.action == "compress":
        name = args.model or f"{lm.DEFAULT_MODEL}:mlc{lm.DEFAULT_BITS}"
        try:
            model = lm.resolve(name)
        except ValueError as err:
            raise CommandError(str(err)) from None
        label = Path(name).name if name.lower().endswith(".mlc") else name
        start = time.perf_counter()
        blob = textcode.compress(data, model, label, progress=not args.quiet)
        seconds = time.perf_counter() - start
        with atomic_open(out) as f:
            f.write(blob)
        bpc = 8 * len(blob) / max(len(data), 1)
        print(f"{out}: {len(blob):,} bytes from {len(data):,} ({bpc:.3f} bits per "
              f"byte, header included) with {label}, in {seconds:.1f} s")  # fmt: skip
        return 0
    header, _ = textcode.read_header(data)
    name = args.model or header.model
    try:
        model = lm.resolve(name)
    except (ValueError, FileNotFoundError) as err:
        raise CommandError(
            f"{err}; this file names the model {header.model!r}: pass --model"
        ) from None
    try:
        text = textcode._decompress(data, model, progress=not args.quiet)
    except ValueError as err:
        if isinstance(err, CorruptFileError):
            raise
        raise CommandError(str(err)) from None
    with atomic_open(out) as f:
        f.write(text)
    print(f"{out}: {len(text):,} bytes, CRC-32 checked, decoded with {name}")
    return 0


def _image(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from mlcomp import codec, vision

    source = _existing(args.file)
    out = Path(args.output)
    _refuse_overwriting(out, source)
    if args.action == "compress":
        try:
            name = codec.model_for(args.lam)
            picture = vision.load_image(source)  # ImageError names the file
            if picture.mode in ("RGBA", "LA", "P"):  # transparency laid on white
                rgba = picture.convert("RGBA")
                white = Image.new("RGBA", rgba.size, "white")
                picture = Image.alpha_composite(white, rgba)
            image = np.asarray(picture.convert("RGB"))
            net = codec.pretrained(name, progress=not args.quiet)
            start = time.perf_counter()
            data = net.compress(image)
        except ValueError as err:
            raise CommandError(str(err)) from None
        seconds = time.perf_counter() - start
        with atomic_open(out) as f:
            f.write(data)
        h, w = image.shape[:2]
        back = net.decompress(data)
        print(f"{out}: {len(data):,} bytes for {w} x {h} pixels "
              f"({8 * len(data) / (h * w):.3f} bits per pixel, header included), "
              f"PSNR {codec.psnr(image, back):.2f} dB, with {name} "
              f"in {seconds:.1f} s")  # fmt: skip
        return 0
    formats = {
        ".png": "PNG",
        ".bmp": "BMP",
        ".tif": "TIFF",
        ".tiff": "TIFF",
        ".ppm": "PPM",
    }
    if out.suffix.lower() not in formats:
        raise CommandError(
            f"{out}: the decoded image is written losslessly: name it .png "
            "(or .bmp, .tif, .ppm)"
        )
    data = Path(source).read_bytes()
    name = codec.read_header(data)["model"]  # CorruptFileError for a bad file
    if name not in codec.RECIPES:
        raise CommandError(
            f"{source} was coded with {name!r}, not one of this version's codecs "
            f"({', '.join(codec.RECIPES)})"
        )
    image = codec.pretrained(name, progress=not args.quiet).decompress(data)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=formats[out.suffix.lower()])
    with atomic_open(out) as f:
        f.write(buffer.getvalue())
    print(f"{out}: {image.shape[1]} x {image.shape[0]} pixels, CRC-32 checked, "
          f"decoded with {name}")  # fmt: skip
    return 0


def _embed(args: argparse.Namespace) -> int:
    import numpy as np

    from mlcomp import encoder

    source = _existing(args.file)
    out = Path(args.output)
    if out.suffix.lower() != ".npy":
        raise CommandError(f"{out}: the output is a NumPy file, name it .npy")
    _refuse_overwriting(out, source)
    raw = Path(source).read_bytes()
    if b"\0" in raw:
        raise CommandError(f"{source} is a binary file, not text (it has NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CommandError(
            f"{source} is not UTF-8 text (byte {err.start} is {raw[err.start]:#04x})"
        ) from None
    lines = text.splitlines()
    if not lines:
        raise CommandError(f"{source} is empty: it needs one sentence per line")
    try:
        model, tokenizer = encoder.load()
    except (ImportError, FileNotFoundError) as err:
        raise CommandError(str(err)) from None
    folder = utils.cache_dir("encoder")
    built = (folder / encoder.variant_file(args.variant)).is_file()
    path = encoder.build_variant(args.variant, folder, model, tokenizer)
    net = encoder.open_variant(args.variant, path, threads=args.threads)
    start = time.perf_counter()
    vectors = encoder.embed(net, tokenizer, lines, progress=not args.quiet)
    seconds = time.perf_counter() - start
    with atomic_open(out) as f:
        np.save(f, vectors)
    how = "cached" if built else "built once, now cached"
    print(f"{out}: {len(lines):,} embeddings of {vectors.shape[1]} floats, variant "
          f"{args.variant} ({path.name}, {how}), in {seconds:.1f} s")  # fmt: skip
    return 0


def _refuse_overwriting(output: Path, source: str | os.PathLike) -> None:
    """An output that is the input (by name, symlink or hard link) would lose it."""
    same = output.resolve() == Path(source).resolve() or (
        output.exists() and Path(source).exists() and os.path.samefile(output, source)
    )
    if same:
        raise CommandError(
            f"the output {output} is the input {source}; writing it would destroy "
            "the input: choose another output path"
        )


def _existing(path: str | os.PathLike) -> str | os.PathLike:
    if not Path(path).is_file():
        raise CommandError(f"no such file: {path}")
    return path


def _fraction(text: str) -> float:
    value = float(text)
    try:
        utils.count(value, 1)  # the package's one rule for an amount
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


def _qp(text: str) -> int:
    try:
        from mlcomp import quant

        quant.qp_step(int(text))
        return int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _bits(text: str) -> int:
    try:
        return utils.check_bits(int(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlcomp", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("zoo", help="verify (or train) the reference models")
    p.add_argument("names", nargs="*", help=f"default: all of {sorted(zoo.RECIPES)}")
    p.add_argument("--retrain", action="store_true",
                   help="re-make the shipped weights of NAMES (default all) "
                   "and of the models trained from them, pinned numerics")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N models at a time, each in its own process with "
                   "its recipe's threads (the weights do not change)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_zoo)

    p = commands.add_parser(
        "numerics", help="show the pinned numerics in effect, or install the kernel"
    )
    p.add_argument("--install-kernel", action="store_true",
                   help="install the Jupyter kernel 'mlcomp' (pinned numerics) into "
                   "this environment")  # fmt: skip
    p.set_defaults(run=_numerics)

    p = commands.add_parser(
        "compress", help="prune, share and entropy-code a state dict into .mlc"
    )
    p.add_argument("model", help="a .safetensors file or a .pt state dict")
    p.add_argument("-o", "--output", required=True, help="the .mlc file to write")
    p.add_argument("--recipe", choices=["deep-compression", "step", "lossless"],
                   default="deep-compression",
                   help="deep-compression (default): k-means codebooks and coded "
                   "indices; step: one uniform step for all weights, levels "
                   "entropy-coded (the NNC standard's kind); lossless: every "
                   "tensor exact")  # fmt: skip
    p.add_argument("--prune", type=_fraction, default=0.0, metavar="FRACTION",
                   help="zero this fraction of each weight tensor, smallest "
                   "magnitudes first (no fine-tuning; default 0)")  # fmt: skip
    p.add_argument("--bits", type=_bits, help="codebook bits for every weight tensor")
    p.add_argument("--conv-bits", type=_bits, help="for conv kernels (default 8)")
    p.add_argument("--fc-bits", type=_bits, help="for matrices (default 5)")
    p.add_argument("--qp", type=_qp, default=None,
                   help="step recipe: quality parameter, step 2**(qp/4) (default "
                   "-32: a step of 1/256; 4 lower halves the step)")  # fmt: skip
    p.add_argument("--step", type=_positive, help="step recipe: the step itself")
    p.add_argument("--rd-lambda", type=_non_negative, default=None,
                   help="step recipe: rate weight of the level choice (default "
                   "ln2/6; 0 rounds to the nearest level)")  # fmt: skip
    p.add_argument("--coder", choices=["huffman", "rans", "none", "auto"],
                   default=None,
                   help="entropy coder of the integer streams (default huffman; "
                   "auto for the step recipe)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_compress)

    p = commands.add_parser("inspect", help="per-tensor table of an .mlc file")
    p.add_argument("file")
    p.set_defaults(run=_inspect)

    p = commands.add_parser("decompress", help="write an .mlc file as a state dict")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True,
                   help="MODEL.safetensors (or .pt)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--max-elements", type=int, default=None, metavar="N",
                   help="allow N entries in all (default: 4,096 per byte of "
                        "the file); a tiny file declaring a huge model is "
                        "refused")  # fmt: skip
    p.set_defaults(run=_decompress)

    p = commands.add_parser(
        "speech", help="synthesize the keyword-spotting splits into the cache (once)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_speech)

    p = commands.add_parser(
        "listen", help="the keyword each WAV recording says, and its probability"
    )
    p.add_argument("files", nargs="+", metavar="FILE.wav",
                   help="any rate, channels, length; 8/16/24/32-bit PCM or float; "
                   "the loudest second is scored")  # fmt: skip
    p.add_argument("--model", metavar="PATH",
                   help="a keyword spotter (.mlc or .safetensors); default: the "
                   "compressed student of chapter 8")  # fmt: skip
    p.add_argument("--top", type=int, choices=range(1, 13), default=1, metavar="K",
                   help="show the K most likely labels (default 1)")  # fmt: skip
    p.set_defaults(run=_listen)

    p = commands.add_parser(
        "look", help="the kind of clothing each picture shows, and its probability"
    )
    p.add_argument("files", nargs="+", metavar="IMAGE",
                   help="PNG, JPEG, GIF, BMP, TIFF or WebP, any size or colour; one "
                   "object, centred (it is cropped and scaled to 28 x 28)")  # fmt: skip
    p.add_argument("--model", metavar="PATH",
                   help="a LeNet-5 (.mlc or .safetensors/.pt state dict); default: "
                   "the compressed LeNet-5 of chapter 7 (P+Q+H)")  # fmt: skip
    p.add_argument("--top", type=int, choices=range(1, 11), default=1, metavar="K",
                   help="show the K most likely classes (default 1)")  # fmt: skip
    p.set_defaults(run=_look)

    p = commands.add_parser(
        "text", help="code any file with a language model (chapter 9): .mlt"
    )
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("compress", help="FILE -> FILE.mlt")
    q.add_argument("file")
    q.add_argument("-o", "--output", required=True, help="the .mlt file to write")
    q.add_argument("--model", metavar="NAME",
                   help="a zoo language model, NAME:mlcB (through an .mlc file of "
                   "B bits) or an .mlc file; default: the compressed model of "
                   "chapter 9")  # fmt: skip
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q = actions.add_parser("decompress", help="FILE.mlt -> the original bytes")
    q.add_argument("file")
    q.add_argument("-o", "--output", required=True, help="the file to write")
    q.add_argument("--model", metavar="NAME",
                   help="the model that coded it (default: the one its header "
                   "names)")  # fmt: skip
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_text)

    p = commands.add_parser(
        "image", help="code a photograph with the learned codec (chapter 2): .mlci"
    )
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("compress", help="IMAGE -> OUT.mlci")
    q.add_argument("file", metavar="IMAGE",
                   help="PNG, JPEG, BMP, TIFF, WebP; up to 65536 a side")  # fmt: skip
    q.add_argument("-o", "--output", required=True, help="the .mlci file to write")
    q.add_argument("--lambda", dest="lam", type=float, default=None, metavar="L",
                   help="the rate-distortion trade-off: the zoo codec trained with "
                   "this lambda (0.0016: smallest files ... 0.0256: best quality; "
                   "default 0.0064)")  # fmt: skip
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q = actions.add_parser("decompress", help="OUT.mlci -> IMAGE.png")
    q.add_argument("file", metavar="OUT.mlci")
    q.add_argument("-o", "--output", required=True, metavar="IMAGE.png",
                   help="image to write (lossless: PNG, BMP, TIFF, PPM)")  # fmt: skip
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_image)

    from mlcomp.encoder import VARIANTS  # torch and numpy only: cheap

    p = commands.add_parser(
        "embed", help="one sentence embedding per line of a text file (chapter 9)"
    )
    p.add_argument("file", metavar="FILE.txt", help="UTF-8 text, one sentence a line")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npy",
                   help="a (lines, 384) float32 NumPy array")  # fmt: skip
    p.add_argument("--variant", default="int8", choices=list(VARIANTS),
                   help="which compressed all-MiniLM-L6-v2 to run (default int8): "
                   + "; ".join(f"{k}: {v}" for k, v in VARIANTS.items()))  # fmt: skip
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_embed)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status.

    >>> main(["zoo", "lenet300-fashion", "--quiet"])  # doctest: +ELLIPSIS
    lenet300-fashion: test accuracy 0.8... ready in ... s
    0
    """
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, CorruptFileError, OSError) as err:
        print(f"mlcomp {args.command}: error: {err}", file=sys.stderr)
        return 1
