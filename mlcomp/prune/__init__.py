"""Pruning: zero the weights that matter least, or remove whole filters.

* :mod:`~mlcomp.prune.masks` — criteria (magnitude, Taylor, SNIP) and
  masks kept the way :mod:`torch.nn.utils.prune` keeps them:
  :func:`magnitude_`, :func:`prune_by_scores_`, :func:`sparsity`,
  :func:`remove_`, :func:`sensitivity`, N:M masks.
* :mod:`~mlcomp.prune.schedules` — pruning while training: the AGP schedule
  and :func:`gradual_prune`; lottery tickets (:func:`rewind_`,
  :func:`iterative_prune`).
* :mod:`~mlcomp.prune.structured` — :func:`shrink_channels` removes whole
  filters, so the model is physically smaller.
* :mod:`~mlcomp.prune.storage` — exact byte counts of CSR, bitmask and
  relative-index storage; the relative indices the ``.mlc`` file writes.

Every verb picks its layers with a ``filter_fn(module, name)``
(:mod:`mlcomp.layers`) and reads ``amount`` by one rule
(:func:`mlcomp.utils.count`).

>>> import torch
>>> from torch import nn
>>> from mlcomp import prune
>>> net = prune.magnitude_(nn.Sequential(nn.Linear(100, 10)), amount=0.9)
>>> prune.sparsity(net)["total"], prune.csr_bytes(net[0].weight)
(0.9, 844)
"""

from mlcomp.layers import prunable
from mlcomp.prune import masks, schedules, storage, structured
from mlcomp.prune.masks import (
    magnitude_,
    magnitude_mask,
    magnitude_scores,
    nm_mask,
    prune_by_scores_,
    prune_nm_,
    remove_,
    sensitivity,
    snip_scores,
    sparsity,
    taylor_scores,
    wanda_scores,
)
from mlcomp.prune.schedules import agp_schedule, gradual_prune, iterative_prune, rewind_
from mlcomp.prune.storage import (
    bitmask_bytes,
    csr_bytes,
    relative_gaps,
    relative_index_bytes,
    relative_indices,
)
from mlcomp.prune.structured import UnsupportedModelError, filter_norms, shrink_channels

__all__ = [
    "UnsupportedModelError",
    "agp_schedule",
    "bitmask_bytes",
    "csr_bytes",
    "filter_norms",
    "gradual_prune",
    "iterative_prune",
    "magnitude_",
    "magnitude_mask",
    "magnitude_scores",
    "masks",
    "nm_mask",
    "prune_nm_",
    "wanda_scores",
    "prunable",
    "prune_by_scores_",
    "relative_gaps",
    "relative_index_bytes",
    "relative_indices",
    "remove_",
    "rewind_",
    "schedules",
    "sensitivity",
    "shrink_channels",
    "snip_scores",
    "sparsity",
    "storage",
    "structured",
    "taylor_scores",
]
