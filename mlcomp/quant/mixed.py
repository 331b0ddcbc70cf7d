"""Mixed precision: a bit width per layer, chosen under a size budget.

Layers differ in how much quantization hurts them (a sensitivity scan,
:func:`mlcomp.quant.sensitivity`, measures it one layer at a time). Given a
cost for every (layer, width) pair — e.g. the accuracy lost when that layer
alone is quantized to that width — and the number of weights of each layer,
:func:`allocate_bits` picks the widths that minimise the summed cost with the
total weight bits at most ``budget``. Summing per-layer costs assumes they
add up, which is a model (HAWQ and similar methods make the same one); the
chapter checks it by measuring the chosen allocation.

The choice is a multiple-choice knapsack; with a handful of layers and
widths it is solved exactly by dynamic programming over the Pareto front of
(size, cost) pairs: after each layer only the allocations that no other one
beats in both size and cost are kept.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["allocate_bits"]


def allocate_bits(
    costs: Mapping[str, Mapping[int, float]],
    sizes: Mapping[str, int],
    budget: float,
) -> dict[str, int]:
    """Widths per layer of least total cost with ``sum(sizes[l] * bits[l]) <= budget``.

    ``costs[layer][bits]`` is the cost of quantizing ``layer`` to ``bits``;
    ``sizes[layer]`` its number of weights; ``budget`` is in bits. Among
    allocations of equal cost the smallest wins. Raises ``ValueError`` when
    even the narrowest widths exceed the budget.

    >>> costs = {"conv": {4: 0.5, 8: 0.0}, "fc": {4: 0.1, 8: 0.0}}
    >>> allocate_bits(costs, {"conv": 100, "fc": 1000}, budget=100 * 8 + 1000 * 4)
    {'conv': 8, 'fc': 4}
    """
    if set(costs) != set(sizes):
        raise ValueError(
            f"costs and sizes name different layers: {sorted(costs)} vs {sorted(sizes)}"
        )
    for layer, options in costs.items():
        if not options:
            raise ValueError(f"layer {layer!r} has no width to choose from")
        if sizes[layer] < 0:
            raise ValueError(f"layer {layer!r} has a negative size {sizes[layer]}")
    # Each front entry: (size in bits, cost, choices); sorted by size, cost falling.
    front: list[tuple[float, float, dict[str, int]]] = [(0, 0.0, {})]
    for layer, options in costs.items():
        grown = sorted(
            (
                (size + sizes[layer] * b, cost + c, {**choice, layer: b})
                for size, cost, choice in front
                for b, c in options.items()
                if size + sizes[layer] * b <= budget
            ),
            key=lambda e: (e[0], e[1]),
        )
        front = []
        for entry in grown:
            if not front or entry[1] < front[-1][1]:
                front.append(entry)
        if not front:
            least = sum(sizes[name] * min(costs[name]) for name in costs)
            raise ValueError(
                f"budget of {budget} bits is below the smallest allocation "
                f"({least} bits)"
            )
    return min(front, key=lambda e: (e[1], e[0]))[2]
