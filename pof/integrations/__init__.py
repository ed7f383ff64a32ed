"""Training-loop integrations (optional extras; each imported only when used).

- :mod:`pof.integrations.hf`: ``PofTrainer``, a Hugging Face ``Trainer`` (``pip install
  pof[hf]``);
- :mod:`pof.integrations.lightning`: ``PofCallback``, a Lightning callback (``pof[lightning]``);
- :mod:`pof.integrations.schedule`: ``ScheduledPenalty``, the loop-independent part both use
  (torch only).
"""
