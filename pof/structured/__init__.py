"""Structured (channel) pruning: whole channels, grouped and removed with Torch-Pruning.

:func:`channel_groups` traces a model with Torch-Pruning's ``DependencyGraph`` into a
:class:`~pof.core.channels.ChannelPlan` (for the channel penalty and the prune);
:func:`prune_channels` masks the channels a ratio removes (mean recovery optional,
reversible with ``pof.unprune``); :func:`remove_channels` removes them physically: a
smaller dense model whose widths checkpoints record. Torch-Pruning is optional
(``pip install 'pof[speed]'``) and imported on first use; loading a channel-pruned
checkpoint does not need it.
"""

from .graph import channel_groups
from .prune import IMPORTANCE, prune_channels, remove_channels

__all__ = ["IMPORTANCE", "channel_groups", "prune_channels", "remove_channels"]
