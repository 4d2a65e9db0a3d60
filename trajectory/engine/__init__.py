"""Layer 2, the engine: a model and evaluation windows in, per-block rows out (no polars, no Hub).

:mod:`.adapters` holds the one table of model-family specifics, :mod:`.probe` the hooks of one forward pass,
:mod:`.stats` the streaming moments and the closed-form affine fit, :mod:`.heldout` the one-pass held-out
scoring, :mod:`.companions` and :mod:`.swap` the companion metrics, :mod:`.measure` ``measure_blocks``.
"""
