"""The core: pure torch, works on any ``nn.Module``.

``targets`` (what a prunable weight is: unit axis, q/k/v groups) → ``selection`` (which
of them) → ``masks`` (which entries) → ``parametrizations`` (the prune mask; adding and
removing pof's parametrizations) → ``sphere`` (unit-norm weights) → ``penalty`` (the
training term) → ``prune`` (masks on the selected weights, undo) → ``fold`` (permanent,
sparse; the layer kinds in ``folded``) → ``sparsity`` (report, with dense reasons);
``model_info`` (a model's device, which BatchNorm follows which layer), ``bn_recal``
(BatchNorm statistics), ``gmp`` and ``subnet`` (the on-the-fly comparators and
pruned-subnetwork loss), ``structure`` (describe / rebuild a model's pof state for
checkpoints). Whole channels: ``channels`` (the plan: groups, scores, column masks) →
``channel_masks`` (masks and mean constants on a model) → ``widths`` (layer sizes after
removal, for checkpoints); tracing and removal need Torch-Pruning and live in
:mod:`pof.structured`.
"""
