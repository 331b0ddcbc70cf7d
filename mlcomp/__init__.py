"""mlcomp: the tested code behind the book "From Data to Theorems".

One module per topic of the book; notebooks import them and only explain,
call, measure and plot. Every name below is an attribute of ``mlcomp``,
imported on first use.

* :mod:`mlcomp.utils` — seeding, cache folders, safe writes, the validators
  of ``bits`` and ``amount``
* :mod:`mlcomp.layers` — ``filter_fn(module, name)``: which layers a verb
  touches; replacing a submodule
* :mod:`mlcomp.data` — one-pass, mergeable preprocessing and the
  out-of-core cleaning pipeline (no PyTorch)
* :mod:`mlcomp.audio` — WAV files of any common format, resampling,
  log-mel spectrograms and MFCCs (no torchaudio)
* :mod:`mlcomp.speech` — synthetic keyword-spotting data (12 classes), split
  by voice, with augmentation
* :mod:`mlcomp.datasets` — Fashion-MNIST, Shakespeare, Palmer penguins (offline)
* :mod:`mlcomp.models` — LeNet-300-100 and LeNet-5 (Han et al.'s variants),
  DS-CNN keyword spotters
* :mod:`mlcomp.kws` — keyword spotting: features, zoo recipes, files, ``classify``
* :mod:`mlcomp.gpt` — a small GPT over bytes with a KV cache
* :mod:`mlcomp.train` — a deterministic training loop and evaluation
* :mod:`mlcomp.measure` — parameters, bytes, MACs, latency
* :mod:`mlcomp.zoo` — the reference models, trained here and cached
* :mod:`mlcomp.coding` — entropy coders and the ``.mlc`` compressed-model file
* :mod:`mlcomp.prune` — pruning: masks, schedules, structured, storage
* :mod:`mlcomp.quant` — quantization, simulated and real (ONNX Runtime int8)
* :mod:`mlcomp.lowrank` — SVD and Tucker-2 factorization
* :mod:`mlcomp.distill` — knowledge distillation (soft targets, hints)
* :mod:`mlcomp.pipeline` — Deep Compression end to end
* :mod:`mlcomp.vision` — chapter 7's compressed LeNet-5 on any picture
  (``mlcomp look``)
* :mod:`mlcomp.cli` — the ``mlcomp`` command line
* :mod:`mlcomp.numerics` — pinned numerics (the same digits on every CPU of one vendor)

Naming: a verb with a trailing ``_`` (``magnitude_``, ``quantize_``,
``kmeans_``, ``calibrate_``, ``factorize_``) changes the model in place and
returns it; a training loop (``train.fit``, ``prune.gradual_prune``,
``prune.iterative_prune``, ``distill.distill``, ``pipeline.share_weights``)
trains the model it is given in place and returns what it measured.

Importing :mod:`mlcomp` before ``torch`` pins PyTorch's CPU arithmetic
(:mod:`mlcomp.numerics`; ``MLCOMP_NUMERICS=native`` turns that off).

>>> import mlcomp
>>> mlcomp.prune.magnitude_.__module__
'mlcomp.prune.masks'
"""

import importlib

from mlcomp import numerics as _numerics

_numerics.pin()

__version__ = "0.1.0"
__all__ = [
    "audio",
    "cli",
    "coding",
    "data",
    "datasets",
    "distill",
    "gpt",
    "kws",
    "layers",
    "lowrank",
    "measure",
    "models",
    "numerics",
    "pipeline",
    "prune",
    "speech",
    "quant",
    "train",
    "utils",
    "vision",
    "zoo",
    "__version__",
]


def __getattr__(name: str):
    # submodules load on first use, so that ``import mlcomp.data`` (on every
    # Dask worker) does not pay for importing PyTorch
    if name in __all__ and name != "__version__":
        return importlib.import_module(f"mlcomp.{name}")
    raise AttributeError(f"module 'mlcomp' has no attribute {name!r}")
