"""Training-loop integrations (optional extras; each imported only when used).

- :mod:`pof.integrations.hf`: ``PofTrainer``, a Hugging Face ``Trainer`` (``pip install
  pof[hf]``);
- :mod:`pof.integrations.lightning`: ``PofCallback``, a Lightning callback (``pof[lightning]``);
- :mod:`pof.integrations.driver`: what both share — a :mod:`pof.methods` object driven by
  the loop's step count, checked when built, and the prune at the end (torch only).
"""
