"""`pof demo` (issue 25 item 9): a range model, GMP for one target and one-shot pruning of
a standard model, and which one to pick for which need, from the measured numbers."""

from __future__ import annotations

import os

import pytest

from pof.cli import main
from pof.demo import advice


def _rows(label: str, dense: float, at: dict[float, float]) -> list[dict]:
    return [{"label": label, "sparsity": 0.0, "recover": "dense", "top1": dense}] + [
        {"label": label, "sparsity": s, "recover": "mean", "top1": v} for s, v in at.items()]


def test_advice_names_the_best_model_for_each_need_from_the_numbers():
    rows = (_rows("standard", 0.99, {0.3: 0.99, 0.8: 0.79, 0.9: 0.41})
            + _rows("gmp80", 0.978, {0.3: 0.978, 0.8: 0.978, 0.9: 0.82})
            + _rows("pof-range", 0.986, {0.3: 0.986, 0.8: 0.975, 0.9: 0.964}))
    dense, target, deploy = advice(rows, 0.8, (0.3, 0.9))
    assert dense.endswith("standard 99.00% or pof-range 98.60% (within a point); gmp80 97.80%")
    assert target.endswith("gmp80 97.80% or pof-range 97.50% (within a point); "
                           "standard 79.00%")
    assert deploy.startswith("any sparsity from 30% to 90%")
    assert deploy.endswith("pof-range 96.40%; gmp80 82.00%, standard 41.00%")


def test_quick_demo_trains_the_three_arms_and_says_which_to_pick(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "gmp80", "pof-range", "standard"]
    tail = out.split("which model to pick, by need:\n")[1].splitlines()
    assert [x.split(":")[0] for x in tail[:3]] == [
        "- no pruning (as trained; gmp80 is already sparse)",
        "- exactly 80%, known before training",
        "- any sparsity from 50% to 80%, chosen at deploy time, from one training run (its "
        "worst)"]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("POF_SLOW"), reason="the full demo (about a minute)")
def test_full_demo_shows_the_arms_apart_at_high_sparsity(tmp_path):
    from pof.demo import run_demo

    rows = run_demo(tmp_path, device="cpu")
    top1 = {(r["label"], r["sparsity"]): r["top1"] for r in rows if r["recover"] == "mean"}
    assert top1["pof-range", 0.9] > top1["gmp80", 0.9] + 0.05  # GMP past its target
    assert top1["pof-range", 0.8] > top1["standard", 0.8] + 0.05  # one-shot of a dense model
    assert top1["pof-range", 0.8] > top1["gmp80", 0.8] - 0.02  # level with GMP at its target
