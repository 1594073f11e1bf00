"""The fine-tuning loop in-process (LocalSession): schedule, loss, early stopping, resume."""

import math

import pytest
import torch

from openmed_ray.config import FinetuneConfig
from openmed_ray.train.loop import make_loss, make_optimizer, make_scheduler, run_finetune_loop
from openmed_ray.train.session import LocalSession


def config_for(tiny_backbone, tiny_data_root, tmp_path, **overrides):
    values = dict(
        dataset="NCBI-disease",
        backbone=str(tiny_backbone),
        output=str(tmp_path / "out"),
        data_root=str(tiny_data_root),
        method="full",
        learning_rate=3e-3,
        batch_size=16,
        epochs=3,
        threads_per_worker=1,
    )
    values.update(overrides)
    return FinetuneConfig(**values)


def test_optimizer_sees_warmup_then_cosine(tmp_path):
    model = torch.nn.Linear(4, 3)
    config = FinetuneConfig(learning_rate=1e-3, warmup_ratio=0.1, weight_decay=0.05)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, total_steps=100)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]  # weight, bias
    seen = []
    for _ in range(100):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(1e-3 / 11)  # linear warm-up over 10 steps
    assert seen[9] == pytest.approx(1e-3 * 10 / 11)
    assert seen[10] == pytest.approx(1e-3)  # peak, then cosine
    assert seen[55] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(seen[10:], seen[11:], strict=False))
    assert seen[-1] < 1e-6


def test_loss_uses_label_smoothing_and_ignores_non_first_pieces():
    loss = make_loss(FinetuneConfig(label_smoothing=0.1))
    assert loss.label_smoothing == 0.1 and loss.ignore_index == -100
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    smoothed = loss(logits, torch.tensor([0, -100]))
    plain = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0]))
    assert smoothed > plain  # smoothing penalises a confident correct answer


def test_loss_falls_and_checkpoint_resumes_at_the_next_epoch(
    tiny_backbone, tiny_data_root, tmp_path
):
    first = LocalSession(tmp_path / "ckpt")
    state = run_finetune_loop(config_for(tiny_backbone, tiny_data_root, tmp_path, epochs=2), first)
    assert [r["epoch"] for r in first.reports] == [1, 2]
    assert first.reports[1]["train_loss"] < first.reports[0]["train_loss"]
    assert state["epoch"] == 2

    resumed = LocalSession(tmp_path / "ckpt", resume=True)
    config = config_for(tiny_backbone, tiny_data_root, tmp_path, epochs=4)
    state = run_finetune_loop(config, resumed)
    assert [r["epoch"] for r in resumed.reports] == [3, 4]
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]
    reported = [{k: v for k, v in r.items() if k != "dev_f1_by_epoch"} for r in first.reports]
    assert state["history"][:2] == reported
    # Each report carries the run's whole dev F1 history, the epochs before the resume too.
    assert resumed.reports[-1]["dev_f1_by_epoch"] == [h["dev_f1"] for h in state["history"]]


def test_early_stopping_after_patience_epochs_without_gain(tiny_backbone, tiny_data_root, tmp_path):
    session = LocalSession(tmp_path / "ckpt")
    config = config_for(
        tiny_backbone, tiny_data_root, tmp_path, learning_rate=1e-12, epochs=10, patience=2
    )
    state = run_finetune_loop(config, session)
    # The first epoch sets the best; two more without gain stop the run.
    assert state["stopped_early"]
    assert [r["epoch"] for r in session.reports] == [1, 2, 3]
    assert state["best_epoch"] == 1


def test_optimizer_step_clips_the_gradient_norm():
    from openmed_ray.train.common import optimizer_step

    def step(max_grad_norm):
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 4)
        before = layer.weight.detach().clone()
        optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        loss = 1000.0 * layer(torch.ones(2, 4)).pow(2).sum()
        optimizer_step(loss, optimizer, scheduler, scaler, max_grad_norm)
        grads = [layer.weight.grad, layer.bias.grad]
        return torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])), before, layer

    unclipped, _, _ = step(None)
    clipped, before, layer = step(1.0)
    assert unclipped > 100.0
    assert clipped == pytest.approx(1.0, rel=1e-4)
    # SGD at lr 1 moves the weights by exactly the clipped gradient.
    assert torch.allclose(before - layer.weight.detach(), layer.weight.grad)
