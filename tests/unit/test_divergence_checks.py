"""A diverged training run stops with a message naming the step and the loss, and writes no model."""

import math

import pytest
import torch

from flowrec.model import tiny_random_model
from flowrec.tune.divergence_checks import DivergenceGuard, TrainingDiverged
from flowrec.tune.forward import sft_losses
from flowrec.tune.loop import train
from flowrec.tune.objectives import make_loss
from tests.unit.test_tune_loop import dataset, paths, settings, tensors, tokenizer  # noqa: F401 (fixtures)

V = 49152
LN_V = math.log(V)


def test_nan_or_infinite_step_loss_names_step_and_part():
    guard = DivergenceGuard("flower", V)
    guard.check_step(1, 0, 3.0, {"sft": 3.0, "subtb": 1.0}, 1e-4)
    with pytest.raises(TrainingDiverged, match=r"flower: training diverged at step 2 \(epoch 0.*subtb = inf"):
        guard.check_step(2, 0, math.inf, {"sft": 3.0, "subtb": math.inf}, 1e-4)
    with pytest.raises(TrainingDiverged, match="loss = nan"):
        guard.check_step(3, 0, math.nan, {"sft": math.nan}, 1e-4)


def test_validation_worse_than_uniform_or_collapsed_stops():
    with pytest.raises(TrainingDiverged, match="worse than guessing uniformly"):
        DivergenceGuard("bigrec", V).check_valid(0, 2 * LN_V)
    with pytest.raises(TrainingDiverged, match="validation SFT loss is nan"):
        DivergenceGuard("bigrec", V).check_valid(0, math.nan)
    # a model that knew something (an earlier epoch at 3 nats) back near ln V: collapsed
    informed = DivergenceGuard("bigrec", V)
    informed.check_valid(0, 3.0)
    with pytest.raises(TrainingDiverged, match="model collapsed"):
        informed.check_valid(1, 0.97 * LN_V)
    # flat at exactly ln V every step: uniform output, whatever the start
    flat = DivergenceGuard("bigrec", V)
    for step in (1, 2, 3):
        flat.check_step(step, 0, 11.0 if step == 1 else LN_V, {"sft": 11.0 if step == 1 else LN_V}, 1.0)
    with pytest.raises(TrainingDiverged, match="collapsed to the uniform distribution"):
        flat.check_valid(0, LN_V + 1e-5)


def test_an_untrained_random_model_near_ln_v_is_not_collapsed():
    """The tiny preset's random model starts near ln V and learns slowly: that is no divergence."""
    guard = DivergenceGuard("bigrec", V)
    for step, loss in enumerate([10.874, 10.86, 10.85], 1):
        guard.check_step(step, 0, loss, {"sft": loss}, 3e-4)
    guard.check_valid(0, 10.84)
    guard.check_valid(1, 10.85)  # a little worse: no collapse, it never knew much
    resumed = DivergenceGuard.resumed(
        "bigrec", V, [{"split": "train", "loss": 5.0}, {"split": "valid", "loss": 4.0}]
    )
    assert resumed.best_valid == 4.0
    with pytest.raises(TrainingDiverged, match="after an earlier epoch's 4"):
        resumed.check_valid(1, 0.97 * LN_V)


class NaNAfterFirstStep:
    """SFT loss whose second call returns NaN, as an overflow would."""

    parts = ("sft",)

    def __init__(self):
        self.calls = 0

    def __call__(self, model, batch, pad_id, generator):
        self.calls += 1
        sft = sft_losses(model, batch)
        return (sft * math.nan if self.calls > 1 else sft), {"sft": sft * math.nan if self.calls > 1 else sft}

    def fingerprint(self):
        return {"loss": "nan_after_first"}


@pytest.mark.parametrize(
    ("loss", "lr", "message"),
    [
        (NaNAfterFirstStep, 1e-3, "training diverged at step 2"),
        (lambda: make_loss("bigrec"), 3e4, "collapsed to the uniform distribution"),  # loss flat at ln V
        (lambda: make_loss("bigrec"), 30.0, "worse than guessing uniformly"),
    ],
)
def test_the_loop_stops_a_diverged_run_before_it_ends(loss, lr, message, dataset, tokenizer, tmp_path):  # noqa: F811
    train_data, valid_data = tensors(dataset, tokenizer, "bigrec")
    torch.manual_seed(0)
    model = tiny_random_model(tokenizer, seed=0)
    with pytest.raises(TrainingDiverged, match=message):
        train(
            model,
            loss(),
            train_data,
            valid_data,
            settings(learning_rate=lr, batch_size=8, micro_batch_size=8),
            paths(tmp_path),
            tokenizer.pad_token_id,
            name="bigrec",
        )
    assert not (tmp_path / "loss.png").exists()  # the run ended before its plot (and before any model)
