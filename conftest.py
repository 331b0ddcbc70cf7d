# Loaded by pytest before any test module: importing mlcomp first pins PyTorch's
# numerics (mlcomp.numerics) in this process and in the notebook kernels nbval
# starts from it, even when a test module imports torch before mlcomp.
import mlcomp  # noqa: F401
