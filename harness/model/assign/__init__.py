"""Assigners: pure ``no_grad`` functions from predictions and targets to matched indices.

Every assigner has the signature ``assign(inp: AssignInput, **params) -> Tensor[R]`` and returns,
per location (or anchor), the index of its GT, -1 for background or -2 for ignore. It never
computes a loss (docs/architecture.md rule 1).
"""
