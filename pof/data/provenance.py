"""Where a model's data came from, and whether data found elsewhere is the same data.

One rule for every command (and ``--resume``): a checkpoint records its data's source and
what the data looked like (classes, image size, normalisation statistics); a copy found
at another path counts as the same data only when all of those agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .datasets import DataSpec
from .load import is_builtin

# what "the same data" means: these agree (statistics to STATS_ATOL)
SAME_DATA_KEYS = ("classes", "image_size", "mean", "std")
STATS_ATOL = 1e-4


def resolved(source: str) -> str:
    """``source`` as an absolute path (a built-in data set's name as it is)."""
    return str(source) if is_builtin(source) else str(Path(source).expanduser().resolve())


def spec_summary(spec: DataSpec) -> dict[str, Any]:
    """The values of :data:`SAME_DATA_KEYS` for a loaded data set, as JSON lists."""
    return {"classes": list(spec.classes), "image_size": list(spec.image_size),
            "mean": list(spec.mean), "std": list(spec.std)}


def data_record(source: str, spec: DataSpec) -> dict[str, Any]:
    """What a checkpoint records about data ``source`` (loaded as ``spec``)."""
    return {"source": resolved(source), **spec_summary(spec)}


def data_difference(recorded: dict[str, Any], now: dict[str, Any]) -> str | None:
    """``None`` when ``now`` is the data ``recorded`` describes (a value not recorded
    counts as agreeing), else the first difference, e.g. ``"classes differ ([..] vs [..])"``.
    ``now`` may hold more keys to compare (``--resume`` adds batches per epoch)."""
    for key, value in now.items():
        was = recorded.get(key)
        if was is None:
            continue
        if key in ("mean", "std"):
            same = (isinstance(was, list) and len(was) == len(value)
                    and all(abs(float(a) - float(b)) <= STATS_ATOL
                            for a, b in zip(was, value, strict=True)))
        else:
            same = was == value
        if not same:
            return f"{key} differ ({was} vs {value})"
    return None
