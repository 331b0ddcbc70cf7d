"""The Jupyter kernel "mlcomp": IPython's kernel, started after ``import mlcomp``.

Importing :mod:`mlcomp` first pins the numerics (:mod:`mlcomp.numerics`)
before anything in the kernel can import torch, unless ``MLCOMP_NUMERICS=native``
was set in the environment Jupyter was started from. Installed by
``mlcomp numerics --install-kernel`` (``make`` does it).
"""

import mlcomp  # noqa: F401  (pins the numerics)

if __name__ == "__main__":
    from ipykernel.kernelapp import launch_new_instance

    launch_new_instance()
