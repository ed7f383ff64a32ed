"""The core: pure torch, works on any ``nn.Module``.

``targets`` (what a prunable weight is: unit axis, q/k/v groups) → ``selection`` (which
of them) → ``masks`` (which entries) → ``sphere`` (unit-norm weights) → ``penalty`` (the
training term) → ``prune`` (masks as parametrizations) → ``fold`` (permanent, sparse;
the layer kinds in ``folded``) → ``sparsity`` (report, with dense reasons);
``bn_recal`` (BatchNorm statistics), ``gmp`` and ``subnet`` (the on-the-fly comparators and
pruned-subnetwork loss), ``structure`` (describe / rebuild a model's pof state for
checkpoints). Whole channels: ``channels`` (the plan: groups, scores, column masks) →
``channel_masks`` (masks and mean constants on a model) → ``widths`` (layer sizes after
removal, for checkpoints); tracing and removal need Torch-Pruning and live in
:mod:`pof.structured`.
"""
