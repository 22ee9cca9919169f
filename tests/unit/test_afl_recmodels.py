"""GRU4Rec and Caser in RecBole on the synthetic rule split of test_sasrec (next = last + 1 mod N): both
learn the rule, and the stage writes p_ui of the test split in our item order."""

import json

import numpy as np
import pytest

from flowrec.afl.recmodels import RecModelSettings
from flowrec.settings import settings_from_block
from tests.unit.test_sasrec import N_ITEMS, SIZES, data_dir, splits  # noqa: F401 (fixtures)


def _settings(**overrides) -> RecModelSettings:
    block = dict(
        embedding_size=16, hidden_size=16, n_h=4, n_v=2, learning_rate=0.01, batch_size=64, epochs=3, seed=7
    )
    return settings_from_block(RecModelSettings, {**block, **overrides}, "afl.gru4rec")


@pytest.mark.parametrize("name", ["gru4rec", "caser"])
def test_recmodel_learns_the_rule_and_exports_p_ui(name, data_dir, tmp_path):  # noqa: F811
    from flowrec.afl.recmodels import train_and_export

    paths = {s: data_dir / f"{s}.parquet" for s in SIZES}
    metrics = train_and_export(
        name, _settings(), data_dir / "items.parquet", paths, 1,
        tmp_path / "model.pth", tmp_path / "p_ui.npy", tmp_path / "metrics.json",
    )  # fmt: skip
    p_ui = np.load(tmp_path / "p_ui.npy")
    assert p_ui.shape == (SIZES["test"], N_ITEMS)
    np.testing.assert_allclose(p_ui.astype(np.float64).sum(1), 1.0, atol=1e-2)
    # Random ranking gives HR@5 = 5/30; three epochs take both well above twice that (GRU4Rec ~0.9,
    # Caser ~0.4: its convolutions see the right-padded window, where the last item moves).
    assert metrics["test"]["HR@5"] > 2 * 5 / N_ITEMS, metrics
    assert json.loads((tmp_path / "metrics.json").read_text())["model"] == name
