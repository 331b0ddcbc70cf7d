"""Information theory and entropy coding.

* :mod:`~mlcomp.coding.model` — entropy, cross-entropy, KL divergence, and the
  :class:`Categorical` entropy model the coders share.
* :mod:`~mlcomp.coding.huffman` — canonical, length-limited Huffman codes.
* :mod:`~mlcomp.coding.rans` — interleaved rANS.
* :mod:`~mlcomp.coding.arithmetic` — exact integer arithmetic coding, one
  symbol at a time with a model that may change at every step.
* :mod:`~mlcomp.coding.lzw` — LZW dictionary coding (GIF's), for teaching.
* :mod:`~mlcomp.coding.lossy` — the core of JPEG (8×8 DCT, quantization
  tables, zig-zag, run-length symbols, Huffman) and G.711's mu-law and A-law.
* :mod:`~mlcomp.coding.bits` — fixed-width bit packing.
* :mod:`~mlcomp.coding.container` — the ``.mlc`` compressed-model file:
  :func:`save_compressed`, :func:`load_compressed`, :func:`inspect`.

Models are separate from coders, as in constriction: every entropy coder
(:mod:`huffman`, :mod:`rans`, :mod:`arithmetic`) takes
``encode(symbols, model=None)`` with a :class:`Categorical` model (or
estimates one from the message) and returns a self-describing stream that
``decode(data)`` reads back, so switching coders changes one line; the
streaming :class:`~mlcomp.coding.arithmetic.ArithmeticEncoder` takes a
``Categorical`` per symbol. LZW is not an entropy coder: it takes bytes and
learns its dictionary from them, so ``lzw.encode(data)`` has no model.

>>> import numpy as np
>>> from mlcomp.coding import Categorical, huffman, rans
>>> message = np.array([1, 0, 1, 1, 3, 1])
>>> model = Categorical([0.2, 0.6, 0.0, 0.2])
>>> for coder in (huffman, rans):
...     assert np.all(coder.decode(coder.encode(message, model)) == message)
"""

from mlcomp.coding import arithmetic, container, huffman, lossy, lzw, rans
from mlcomp.coding._format import CorruptFileError
from mlcomp.coding.bits import pack_bits, unpack_bits
from mlcomp.coding.container import (
    TensorSpec,
    inspect,
    load_compressed,
    save_compressed,
)
from mlcomp.coding.model import Categorical, cross_entropy, entropy, kl_divergence

__all__ = [
    "Categorical",
    "CorruptFileError",
    "TensorSpec",
    "arithmetic",
    "container",
    "cross_entropy",
    "entropy",
    "huffman",
    "inspect",
    "kl_divergence",
    "load_compressed",
    "lossy",
    "lzw",
    "pack_bits",
    "rans",
    "save_compressed",
    "unpack_bits",
]
