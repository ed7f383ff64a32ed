"""The core: pure torch, works on any ``nn.Module``.

``selection`` (which layers) → ``masks`` (which weights) → ``sphere`` (unit-norm weights)
→ ``penalty`` (the training term) → ``prune`` (masks as parametrizations) → ``fold``
(permanent, sparse) → ``sparsity`` (report), ``bn_recal`` (BatchNorm statistics),
``structure`` (describe / rebuild a model's pof state for checkpoints). Whole channels:
``channels`` (the plan: groups, scores, column masks) → ``channel_masks`` (masks and mean
constants on a model) → ``widths`` (layer sizes after removal, for checkpoints); tracing
and removal need Torch-Pruning and live in :mod:`pof.structured`.
"""
