"""The training loop on Accelerate: mid-epoch resume, gradient clipping, fp32 master weights under bf16
autocast, progress lines in the log (issue 12)."""

import logging
import re

import numpy as np
import pandas as pd
import pytest
import torch

from flowrec.model import tiny_random_model
from flowrec.tune.accel import make_accelerator
from flowrec.tune.loop import train
from flowrec.tune.objectives import make_loss
from flowrec.tune.step import Optimisation, optimizer_step
from tests.unit.test_tune_loop import dataset, paths, settings, tensors, tokenizer  # noqa: F401


class Interrupted(Exception):
    pass


def test_resume_from_a_mid_epoch_checkpoint_gives_the_uninterrupted_weights(dataset, tokenizer, tmp_path):  # noqa: F811
    """Flower (its on-policy sampler draws from the checkpointed generator), 4 steps an epoch, a
    checkpoint every 3 steps: killed after step 3 (mid-epoch 0), resumed, it ends where a straight run
    does, and writes the same log."""
    data = tensors(dataset, tokenizer, "flower")
    loss = make_loss("flower", {"lambda": 0.01, "reward": "div"}, dataset[1], 1)
    cfg = settings(epochs=2, patience=5, batch_size=4, micro_batch_size=2, checkpoint_steps=3)

    def run(folder, on_checkpoint=None):
        model = tiny_random_model(tokenizer, seed=0)
        pad = tokenizer.pad_token_id
        result = train(
            model, loss, *data, cfg, paths(folder), pad, name="flower", on_checkpoint=on_checkpoint
        )
        return model, result

    straight, _ = run(tmp_path / "a")
    seen = []

    def interrupt(progress):
        seen.append((progress.step, progress.epoch, progress.epoch_step))
        if progress.step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(tmp_path / "b", interrupt)
    assert seen == [(3, -1, 3)]  # mid-epoch: no epoch finished, 3 of its 4 steps taken
    ckpt = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)  # no pickled objects
    assert ckpt["progress"]["epoch_step"] == 3 and len(ckpt["progress"]["rows"]) == 3
    resumed, result = run(tmp_path / "b")
    assert result.resumed_from_step == 3 and result.epochs_run == 2
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=0, msg=key)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b/log.csv"), pd.read_csv(tmp_path / "a/log.csv"))


class RecordingSGD(torch.optim.SGD):
    """SGD with lr 1: the update is minus the gradient, so its norm is the clipped gradient's."""

    def __init__(self, params):
        super().__init__(params, lr=1.0)
        self.norms: list[float] = []

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return super().step(closure)


@pytest.mark.parametrize("max_norm", [0.05, None])
def test_gradient_clipping_bounds_the_update(max_norm, dataset, tokenizer):  # noqa: F811
    train_data, _ = tensors(dataset, tokenizer, "bigrec")
    model = tiny_random_model(tokenizer, seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    sgd = RecordingSGD(params)
    opt = Optimisation(params, sgd, torch.optim.lr_scheduler.LambdaLR(sgd, lambda step: 1.0))
    before = [p.detach().clone() for p in params]
    cfg = settings(max_grad_norm=max_norm)
    accelerator = make_accelerator("fp32", torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    step = optimizer_step(
        accelerator, model, make_loss("bigrec"), train_data, np.arange(8), cfg, opt, 0, generator
    )
    update = float(
        torch.linalg.vector_norm(
            torch.stack([(p.detach() - b).norm() for p, b in zip(params, before, strict=True)])
        )
    )
    assert step.grad_norm > 0.5  # the loss of a random model has a large gradient: clipping bites
    if max_norm is None:  # no clipping: the logged norm is the norm the optimizer applied
        assert sgd.norms[0] == pytest.approx(step.grad_norm, rel=1e-5)
        assert update == pytest.approx(step.grad_norm, rel=1e-4)
    else:
        assert sgd.norms[0] <= max_norm * (1 + 1e-5)
        assert update <= max_norm * (1 + 1e-4)


def test_master_weights_stay_fp32_when_the_model_is_bf16(dataset, tokenizer, tmp_path):  # noqa: F811
    """A model handed in bf16, precision bf16 on the CPU: the forward runs under bf16 autocast, the
    trainable weights (cast to fp32 on entry) and AdamW's state are fp32, and the weights hold values
    that bf16 cannot represent (small updates are not rounded away)."""
    train_data, valid_data = tensors(dataset, tokenizer, "flower")
    model = tiny_random_model(tokenizer, seed=0).to(torch.bfloat16)
    seen_dtypes = set()
    hook = model.model.layers[0].mlp.gate_proj.register_forward_hook(
        lambda module, args, out: seen_dtypes.add((module.weight.dtype, out.dtype))
    )
    loss = make_loss("flower", {"lambda": 0.01, "reward": "div"}, dataset[1], 1)
    cfg = settings(precision="bf16", learning_rate=1e-5)
    train(model, loss, train_data, valid_data, cfg, paths(tmp_path), tokenizer.pad_token_id, name="flower")
    hook.remove()
    assert seen_dtypes == {(torch.float32, torch.bfloat16)}  # fp32 weight, bf16 matmul
    assert all(p.dtype == torch.float32 for p in model.parameters())
    state = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)["optimizer"]["state"]
    assert state and all(
        s[k].dtype == torch.float32 for s in state.values() for k in ("exp_avg", "exp_avg_sq")
    )
    weight = model.model.layers[0].mlp.gate_proj.weight.detach()
    assert (weight != weight.bfloat16().float()).float().mean() > 0.5
    log = pd.read_csv(tmp_path / "log.csv")
    assert np.isfinite(log["loss"]).all()


@pytest.mark.parametrize(("every", "logged_steps"), [(2, [2, 4]), (3, [3, 4])])
def test_the_log_has_a_line_every_n_steps(every, logged_steps, dataset, tokenizer, tmp_path, caplog):  # noqa: F811
    train_data, valid_data = tensors(dataset, tokenizer, "flower")  # 16 samples: 4 steps of 4
    loss = make_loss("flower", {"lambda": 0.01, "reward": "div"}, dataset[1], 1)
    cfg = settings(batch_size=4, micro_batch_size=4, log_steps=every, max_grad_norm=1.0)
    model = tiny_random_model(tokenizer, seed=0)
    with caplog.at_level(logging.INFO, logger="flowrec"):
        train(
            model, loss, train_data, valid_data, cfg, paths(tmp_path), tokenizer.pad_token_id, name="flower"
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "flowrec.tune.loop"]
    pattern = re.compile(
        r"step (\d+)/4 epoch 1: loss \S+ \(sft \S+, subtb \S+\) lr \S+ grad norm \S+, \S+ samples/s, ETA \S+"
    )
    assert [int(m.group(1)) for m in map(pattern.fullmatch, lines) if m] == logged_steps
    in_effect = [line for line in lines if "settings in effect" in line]
    assert (
        len(in_effect) == 1
        and "'max_grad_norm': 1.0" in in_effect[0]
        and f"'log_steps': {every}" in in_effect[0]
    )
    assert "autocast no" in in_effect[0]
    log = pd.read_csv(tmp_path / "log.csv")
    train_rows = log[log["split"] == "train"]
    assert (train_rows["grad_norm"] > 0).all() and log[log["split"] == "valid"]["grad_norm"].isna().all()
