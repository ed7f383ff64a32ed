"""Training methods as objects: each through the public API in a plain loop, the range
model's distilled step by hand, state round trips, the README's own-loop example, and the
Hugging Face / Lightning integrations driving a range."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pof

README = Path(__file__).parents[2] / "README.md"


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 5))


def _data(n: int = 8, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 3, 10, 10, generator=g), torch.randint(0, 5, (16,), generator=g))
            for _ in range(n)]


def _train(model: nn.Module, method: pof.Method, data) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for x, y in data:
        loss = method.loss(x, y, F.cross_entropy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step()
        losses.append(loss.item())
    method.finish()
    return losses


def _pruned_fraction(model: nn.Module) -> float:
    rows = [r for r in pof.sparsity_report(model).layers if r.dense is None]
    return sum(r.zeros for r in rows) / sum(r.numel for r in rows)


METHODS = {
    "standard": lambda m: pof.Method(m),
    "l1": lambda m: pof.L1(m, 1e-3),
    "pof": lambda m: pof.OneTarget(m, 0.7, warmup_steps=2),
    "range": lambda m: pof.OnTheFly(m, (0.3, 0.9), distill=1.0),
    "cram": lambda m: pof.CramStyle(m, (0.3, 0.9)),
    "gmp": lambda m: pof.GMP(m, 0.6, total_steps=8, end=0.5, every=2),
}


@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_in_a_plain_loop_and_resumes_from_its_state(name):
    torch.manual_seed(0)
    model = _net()
    method = METHODS[name](model)
    losses = _train(model, method, _data(4))
    assert all(torch.isfinite(torch.tensor(losses))) and method.steps == 4
    # a copy built anew and loaded from the state takes the same next step
    twin = _net()
    twin_method = METHODS[name](twin)
    twin.load_state_dict(model.state_dict())
    twin_method.load_state_dict(method.state_dict())
    assert twin_method.steps == 4
    x, y = _data(1, seed=5)[0]
    a, b = method.loss(x, y, F.cross_entropy), twin_method.loss(x, y, F.cross_entropy)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    if name == "gmp":
        assert method.logs()["gmp_sparsity"] == pytest.approx(0.6)
        assert _pruned_fraction(model) == pytest.approx(0.6, abs=0.01)
    if name in ("pof", "range"):
        assert method.logs()["pruned_energy"] < 0.5


def test_range_step_is_dense_half_plus_distilled_pruned_half_plus_penalty():
    """The loss of one OnTheFly step, rebuilt from its parts."""
    torch.manual_seed(0)
    model = _net()
    method = pof.OnTheFly(model, (0.3, 0.9), distill=0.25, warmup_steps=0)
    x, y = _data(1)[0]
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    got = method.loss(x, y, F.cross_entropy).item()
    reg = method.last_regularizer
    model.load_state_dict(state)  # BatchNorm statistics as before the step
    s = method.sampler.samples(0, 1)[0]
    with torch.no_grad():
        dense = F.cross_entropy(model(x[:8]), y[:8])
        teacher = model(x[8:])
        with method.sampler.pruned(s):
            pruned = model(x[8:])
    kl = F.kl_div(F.log_softmax(pruned, 1), F.log_softmax(teacher, 1), reduction="batchmean",
                  log_target=True)
    sub = 0.75 * F.cross_entropy(pruned, y[8:]) + 0.25 * kl
    assert got == pytest.approx((dense.item() + sub.item()) / 2 + reg, rel=1e-5)
    assert reg > 0 and kl.item() > 0


def test_sandwich_with_two_subnetworks_trains_the_top_of_the_range_every_step():
    method = pof.OnTheFly(_net(), (0.3, 0.9), subnets=2)
    for step in range(6):
        ss = method.sampler.samples(step, 2)
        assert ss[0] == 0.9 and 0.3 <= ss[1] <= 0.9
    high = pof.OnTheFly(_net(), (0.3, 0.9), sample="high").sampler
    draws = [high.sample(t) for t in range(400)]
    assert sum(d > 0.6 for d in draws) > 1.5 * sum(d <= 0.6 for d in draws)  # 3:1 expected


def test_teacher_pass_leaves_batchnorm_statistics_alone():
    torch.manual_seed(0)
    model, plain = _net(), _net()
    plain.load_state_dict(model.state_dict())
    method = pof.OnTheFly(model, (0.3, 0.9), weight=0, distill=1.0, sphere=False)
    x, y = _data(1)[0]
    model.train()
    plain.train()
    method.loss(x, y, F.cross_entropy)
    plain(x[:8])  # only the dense half moves the running statistics
    torch.testing.assert_close(model[1].running_mean, plain[1].running_mean)


@pytest.mark.parametrize("bad, match", [
    (dict(distill=1.5), "distill"), (dict(subnets=0), "subnets"), (dict(sample="x"), "sample"),
    (dict(sparsity=(0.9, 0.3)), "sparsity"), (dict(every=0), "every")])
def test_on_the_fly_refuses_bad_values(bad, match):
    with pytest.raises(pof.PofError, match=match):
        pof.OnTheFly(_net(), **{"sparsity": (0.3, 0.9), **bad})


def test_readme_own_loop_example_runs():
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
              if "pof.OnTheFly" in b]
    assert len(blocks) == 1
    ns: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), ns)
    assert ns["method"].steps == 20
    assert _pruned_fraction(ns["model"]) == pytest.approx(0.55, abs=0.01)


# -- integrations drive the same objects
def _tiny_bert():
    tr = pytest.importorskip("transformers")
    cfg = tr.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, num_labels=2)
    return tr.BertForSequenceClassification(cfg)


def test_hf_trainer_trains_a_range_and_prunes_where_asked(tmp_path):
    tr = pytest.importorskip("transformers")
    from pof.integrations.hf import PofTrainer

    torch.manual_seed(0)
    model = _tiny_bert()
    data = [{"input_ids": torch.randint(100, (8,)), "labels": i % 2} for i in range(32)]
    args = tr.TrainingArguments(str(tmp_path), max_steps=4, per_device_train_batch_size=8,
                                logging_steps=2, save_strategy="no", report_to=[])
    trainer = PofTrainer(model=model, args=args, train_dataset=data, pof_sparsity="0.3:0.9",
                         pof_prune="mean", pof_prune_at=0.5, pof_kwargs={"distill": 1.0})
    seen = []
    pruned = trainer.pof.method.sampler.pruned
    trainer.pof.method.sampler.pruned = lambda s: (seen.append(s), pruned(s))[1]
    trainer.train()
    assert len(seen) == 4 and seen[1] == seen[3] == 0.9  # one pruned pass a step, sandwich
    logs = [r for r in trainer.state.log_history if "loss" in r]
    assert all(r["pof_penalty"] > 0 and "pruned_energy" in r for r in logs)
    rows = [r for r in pof.sparsity_report(model).layers if r.dense is None]
    assert rows and all(r.zeros == pytest.approx(0.5 * r.numel, abs=1) for r in rows)


@pytest.mark.parametrize("kw, match", [
    (dict(pof_sparsity="0.3:0.9", pof_prune="mean"), "prune_at"),
    (dict(pof_sparsity="0.3:0.9", pof_prune="mean", pof_prune_at=0.95), "prune_at"),
    (dict(pof_sparsity=1.5), "sparsity"),
    (dict(pof_sparsity=0.5, pof_prune="half"), "prune"),
    (dict(pof_sparsity=0.5, pof_kwargs={"distil": 1}), "distil")])
def test_hf_trainer_checks_its_arguments_when_built(tmp_path, kw, match):
    tr = pytest.importorskip("transformers")
    from pof.integrations.hf import PofTrainer

    args = tr.TrainingArguments(str(tmp_path), max_steps=1, report_to=[], save_strategy="no")
    with pytest.raises(pof.PofError, match=match):
        PofTrainer(model=_tiny_bert(), args=args, **kw)


@pytest.mark.parametrize("kw, match", [
    (dict(sparsity="0.3:0.9", prune="mean"), "prune_at"),
    (dict(sparsity="0.3:0.9", distill=2.0), "distill"),
    (dict(sparsity=0.5, warmup_steps=-1), "warmup_steps"),
    (dict(sparsity=0.5, colour=3), "colour"),
    (dict(), "sparsity")])
def test_lightning_callback_checks_its_arguments_when_built(kw, match):
    pytest.importorskip("lightning")
    from pof.integrations.lightning import PofCallback

    with pytest.raises(pof.PofError, match=match):
        PofCallback(**kw)


def _fit_lightning(L, callback):
    """Four Lightning steps of a LightningModule around ``_net()`` (its task loss logged)
    with ``callback``, on random data; returns the module."""

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            loss = F.cross_entropy(self(batch[0]), batch[1])
            self.log("task", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 3, 10, 10), torch.randint(0, 5, (64,)))
    trainer = L.Trainer(max_steps=4, callbacks=[callback], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    module = Module()
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=16))
    return module


def test_lightning_callback_trains_a_distilled_range():
    L = pytest.importorskip("lightning")
    from pof.integrations.lightning import PofCallback

    cb = PofCallback("0.3:0.9", distill=1.0, prune="mean", prune_at=0.8)
    module = _fit_lightning(L, cb)
    assert cb.pof.method.steps == 4 and isinstance(cb.pof.method, pof.OnTheFly)
    assert _pruned_fraction(module) == pytest.approx(0.8, abs=0.01)
    assert "training_step" not in vars(module) and "log" not in vars(module)


def test_a_frozen_teacher_is_distilled_instead_of_the_dense_network(tmp_path):
    """subnet_teacher init: the pruned passes learn the starting model's outputs; the teacher
    does not move and is not the model being trained."""
    import copy

    from pof.training import TrainConfig, Trainer

    torch.manual_seed(0)
    model = _net()
    frozen = copy.deepcopy(model)
    method = pof.OnTheFly(model, (0.3, 0.9), distill=1.0, teacher=frozen)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    _train(model, method, _data(3))
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in before.items())
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    base = dict(model="small_cnn", model_kwargs={"width": 8}, data="digits", epochs=1,
                batch_size=64, workers=0, progress=False, penalty="pof", sparsity="0.3:0.9")
    with pytest.raises(ValueError, match="subnet_teacher init"):
        TrainConfig(**base, subnet_teacher="init", subnet_distill=1.0)
    first = Trainer(TrainConfig(**base, out=str(tmp_path / "a"), max_steps=2))
    init = first.run() / "last.safetensors"
    run = Trainer(TrainConfig(**base, out=str(tmp_path / "b"), init=str(init), max_steps=3,
                              subnet_teacher="init", subnet_distill=1.0))
    x = torch.randn(4, *run.test_ds.spec.image_size)
    with torch.no_grad():
        start = run.model.eval()(x)
    run.run()
    teacher = run.method.teacher
    # the starting model's function, also under parametrize.cached() (every training step),
    # where a plain deepcopy of the sphere model would read the trained weights
    with torch.no_grad(), torch.nn.utils.parametrize.cached():
        moved = run.model.eval()(x)
        taught = teacher(x)
    assert not torch.allclose(moved, start, atol=1e-4)
    torch.testing.assert_close(taught, start)


def test_lightning_callback_drives_gmp_given_as_a_method():
    L = pytest.importorskip("lightning")
    from pof.integrations.lightning import PofCallback

    cb = PofCallback(method=lambda m: pof.GMP(m, 0.6, total_steps=4, end=0.5, every=1))
    module = _fit_lightning(L, cb)
    assert cb.pof.method.steps == 4
    assert _pruned_fraction(module) == pytest.approx(0.6, abs=0.01)
    with pytest.raises(pof.PofError, match="no pof target"):
        from pof.integrations.driver import Driver

        Driver(pof.GMP(_net(), 0.5, 10), prune="mean")
