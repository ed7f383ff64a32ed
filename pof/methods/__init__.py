"""Training methods as objects any loop can drive (see :mod:`pof.methods.base`).

================ ===================================================================
``Method``       standard training (the base)
``L1``           plain L1 regularisation
``OneTarget``    pof for one sparsity: sphere + pruning penalty (warm-up, target ramp)
``OnTheFly``     pof for a sparsity range: nested penalty + pruned subnetworks, with
                 in-place distillation
``ChannelRange`` pof for a range of channel fractions: one model, any width at deploy
``CramStyle``    CrAM-style: the loss at a sampled pruned point, whole batch, no penalty
``GMP``          gradual magnitude pruning on the cubic schedule
================ ===================================================================
"""

from .base import Method
from .channel_range import ChannelRange
from .gmp import GMP
from .on_the_fly import CramStyle, OnTheFly
from .penalized import L1, OneTarget

__all__ = ["GMP", "L1", "ChannelRange", "CramStyle", "Method", "OnTheFly", "OneTarget"]
