"""Hugging Face Trainer and Lightning integrations: the README snippets, the loss, logging."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch
import transformers as tr
from torch import nn

import pof
from pof.integrations.hf import PofTrainer
from pof.integrations.lightning import PofCallback

README = Path(__file__).parents[2] / "README.md"


def _snippet(marker: str) -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
              if marker in b]
    assert len(blocks) == 1, f"README needs exactly one python block with {marker}"
    return blocks[0]


def _selected(model):
    return [r for r in pof.sparsity_report(model).layers if r.dense is None]


def _run_snippet(marker: str, where: Path, monkeypatch, capsys):
    """Run the README block that mentions ``marker`` in ``where``: (namespace, stdout)."""
    monkeypatch.chdir(where)
    ns: dict = {}
    exec(compile(_snippet(marker), "README.md", "exec"), ns)
    return ns, capsys.readouterr().out


def test_readme_hf_snippet(tmp_path, monkeypatch, capsys):
    ns, out = _run_snippet("PofTrainer", tmp_path, monkeypatch, capsys)
    assert re.search(r"attention\.self\.query\.weight: +70\.00% of +4,096 zero\n", out)
    assert "(dense: embedding, left out by default" in out
    logs = [r for r in ns["trainer"].state.log_history if "loss" in r]
    assert len(logs) == 2 and all(r["pof_penalty"] > 0 and r["pruned_energy"] > 0 for r in logs)
    rows = _selected(ns["model"])
    assert len(rows) == 14 and all(r.zeros == round(0.7 * r.numel) for r in rows)


def test_readme_lightning_snippet(tmp_path, monkeypatch, capsys):
    ns, out = _run_snippet("PofCallback", tmp_path, monkeypatch, capsys)
    assert "net.2.weight:  70.00% of       4,096 zero" in out
    metrics = ns["trainer"].callback_metrics
    assert metrics["pof_penalty"] > 0 and "pruned_energy" in metrics
    assert ns["trainer"].global_step == 16
    assert "training_step" not in vars(ns["model"])  # the wrapper is gone after fit


def _tiny_bert():
    cfg = tr.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, num_labels=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return tr.BertForSequenceClassification(cfg)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_hf_loss_is_task_loss_plus_warmed_up_penalty(tmp_path, accumulate):
    torch.manual_seed(0)
    model = _tiny_bert()
    args = tr.TrainingArguments(str(tmp_path), max_steps=2, report_to=[], save_strategy="no",
                                gradient_accumulation_steps=accumulate)
    trainer = PofTrainer(model=model, args=args, pof_sparsity=0.5, pof_weight=3.0,
                         pof_warmup_steps=4)
    assert pof.is_sphere(model.bert.encoder.layer[0].attention.self.query)
    batch = {"input_ids": torch.randint(100, (4, 8)), "labels": torch.tensor([0, 1, 0, 1])}
    batch = {k: v.to(args.device) for k, v in batch.items()}  # the Trainer put the model there
    model.train()
    trainer.state.global_step = 2  # half-way through the warm-up
    loss = trainer.compute_loss(model, dict(batch))
    task = model(**batch).loss
    pen = trainer.pof.method.penalty().item() * 0.5
    scaled = trainer._loss_is_scaled(None)
    expect = task.item() + pen / (accumulate if scaled else 1)
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    assert pen > 0.1
    with pytest.raises(ValueError, match="prune must be"):
        PofTrainer(model=_tiny_bert(), args=args, pof_sparsity=0.5, pof_prune="half")


def test_lightning_loss_includes_penalty_and_dict_outputs():
    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

        def training_step(self, batch, batch_idx):
            return {"loss": nn.functional.cross_entropy(self.net(batch[0]), batch[1])}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    class Check(L.Callback):
        seen: list = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.batch = batch

        def on_before_backward(self, trainer, module, loss):
            with torch.no_grad():
                task = nn.functional.cross_entropy(module.net(self.batch[0]), self.batch[1])
            self.seen.append((loss.item(), task.item(), cb.pof.method.last_regularizer))

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 6), torch.randint(0, 3, (64,)))
    cb, check = PofCallback(0.6, weight=2.0, warmup_steps=2, prune="zero"), Check()
    trainer = L.Trainer(max_steps=4, callbacks=[cb, check], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    module = Module()
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=16))
    assert len(check.seen) == 4 and check.seen[0][2] == 0.0  # warm-up starts at 0
    for loss, task, pen in check.seen:
        assert loss == pytest.approx(task + pen, rel=1e-5, abs=1e-6)
    assert check.seen[-1][2] > 0
    assert [r.zeros for r in pof.sparsity_report(module).layers] == [58, 29]  # round(0.6 n)
