"""Distribution fitting (RQ1): target sets, tuning draws, DPO pairs, the trie-constrained GRPO sampler,
the divergence table on hand-computed values, and a tiny end-to-end run of each tuning driver."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from flowrec.distfit import trl
from flowrec.distfit.evaluate import divergence_table, generate_titles
from flowrec.distfit.files import sort_target
from flowrec.distfit.target import DistfitSettings, draw_titles, read_target_file, sampled_titles, target_trie
from flowrec.distfit.train import train_with_loop
from flowrec.report import frequency_matrix

ITEMS = ["Toy Story", "Star Wars", "Fargo", "Contact", "Return of the Jedi", "Fargo"]


def write(tmp_path, text: str, name: str = "target.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- target sets ---------------------------------------------------------------------------------


def test_read_target_file_any_titles_sorted_by_count(tmp_path):
    # Titles need not be items of any dataset: a user's target may come from anywhere.
    path = write(tmp_path, json.dumps({"Fargo": 2, "Star Wars": 5, "A Title Of My Own": 2.5}))
    target = read_target_file(path)
    assert list(target.items()) == [("Star Wars", 5.0), ("A Title Of My Own", 2.5), ("Fargo", 2.0)]


def test_read_target_csv(tmp_path):
    path = write(tmp_path, 'title,count\nFargo,2\n"Crumb, the film",7\n', "t.csv")
    assert read_target_file(path) == {"Crumb, the film": 7.0, "Fargo": 2.0}


def test_duplicate_title_names_file_and_title(tmp_path):
    # json.load alone would keep the last value silently
    path = write(tmp_path, '{"Fargo": 2, "Contact": 1, "Fargo": 3}')
    with pytest.raises(ValueError, match=r"target\.json: title 'Fargo' appears more than once"):
        read_target_file(path)
    path = write(tmp_path, "title,count\nFargo,2\nContact,1\nFargo,3\n", "t.csv")
    with pytest.raises(ValueError, match=r"t\.csv: line 4: title 'Fargo' appears more than once .*line 2"):
        read_target_file(path)


@pytest.mark.parametrize("count", [0, -1, "3", True, None, float("nan")])
def test_bad_count(tmp_path, count):
    path = write(tmp_path, json.dumps({"Fargo": 2, "Contact": count}))
    with pytest.raises(ValueError, match=r"title 'Contact' has count .*expected a positive number"):
        read_target_file(path)


@pytest.mark.parametrize("count", ["0", "-2", "many", ""])
def test_bad_csv_count_names_the_line(tmp_path, count):
    path = write(tmp_path, f"title,count\nFargo,2\nContact,{count}\n", "t.csv")
    with pytest.raises(ValueError, match=r"t\.csv: line 3: title 'Contact' has count .*positive number"):
        read_target_file(path)


def test_empty_title(tmp_path):
    with pytest.raises(ValueError, match=r"target\.json: title '': empty title"):
        read_target_file(write(tmp_path, json.dumps({"Fargo": 2, "": 1})))
    with pytest.raises(ValueError, match=r"t\.csv: line 2: empty title"):
        read_target_file(write(tmp_path, "title,count\n  ,3\nFargo,1\n", "t.csv"))


@pytest.mark.parametrize("text", ['["Fargo"]', '{"Fargo": 1}', "{not json"])
def test_malformed_target(tmp_path, text):
    with pytest.raises(ValueError, match=r"target\.json"):
        read_target_file(write(tmp_path, text))


def test_csv_needs_title_and_count_columns(tmp_path):
    with pytest.raises(ValueError, match=r"t\.csv: expected the CSV columns title,count"):
        read_target_file(write(tmp_path, "name,n\nFargo,2\nHeat,1\n", "t.csv"))


def test_sampled_titles_keep_their_counts_and_leave_unseen_out():
    frequency = [3, 7, 3, 0, 1, 12, 5, 2]
    groups = pd.DataFrame({"title": list("abcdefgh"), "frequency": frequency, "group": 0})
    target = sampled_titles(groups, 4, seed=3)
    assert len(target) == 4 and "d" not in target
    assert all(target[t] == frequency["abcdefgh".index(t)] for t in target)
    assert target == sampled_titles(groups.sample(frac=1.0, random_state=0), 4, seed=3)  # row order free
    assert sampled_titles(groups, 4, seed=4) != target  # the seed picks the titles
    assert set(sampled_titles(groups, 100, seed=0)) == set("abcefgh")  # fewer than asked: all of them


def test_draw_titles_seeded_and_proportional():
    target = {"a": 6.0, "b": 3.0, "c": 1.0}
    draw = draw_titles(target, 20000, seed=1)
    assert draw[:50] == draw_titles(target, 20000, seed=1)[:50]
    shares = pd.Series(draw).value_counts(normalize=True)
    np.testing.assert_allclose(shares[["a", "b", "c"]], [0.6, 0.3, 0.1], atol=0.01)


def test_dpo_pairs_reject_a_less_frequent_title():
    target = {"a": 5.0, "b": 3.0, "c": 3.0, "d": 1.0}
    chosen, rejected = trl.dpo_pairs(target, 2000, seed=0)
    assert all(target[r] < target[c] for c, r in zip(chosen, rejected, strict=True))
    assert "d" not in chosen  # nothing is less frequent than the least frequent title
    assert set(rejected) == {"b", "c", "d"}
    # The paper's pairs: a random (uniform) chosen title, not one in proportion to its count.
    shares = pd.Series(chosen).value_counts(normalize=True)
    np.testing.assert_allclose(shares[["a", "b", "c"]], [1 / 3] * 3, atol=0.04)
    with pytest.raises(ValueError, match="same count"):
        trl.dpo_pairs({"a": 1.0, "b": 1.0}, 4, seed=0)


def test_settings_lambda_key_and_unknown_key():
    s = DistfitSettings.from_block({"lambda": 0.5, "batch_size": 8})
    assert s.lambda_ == 0.5 and s.micro_batch_size == 8 and s.n_generate == 256
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['temperature'\]"):
        DistfitSettings.from_block({"temperature": 1.0})
    with pytest.raises(ValueError, match="multiple of"):
        DistfitSettings.from_block({"batch_size": 8, "micro_batch_size": 3})


# ---- trie, divergences, figure data ----------------------------------------------------------------


def hand_trie():
    """Titles a, b, c with token paths [1, 9], [2, 9], [2, 3, 9] (9 = the end)."""
    from flowrec.trie import Trie

    paths = {"a": [1, 9], "b": [2, 9], "c": [2, 3, 9]}
    return Trie.build(list(paths), paths, [1.0, 1.0, 1.0])


def test_divergence_table_hand_values():
    trie = hand_trie()
    target = {"a": 1.0, "b": 1.0}
    probs = {"flower": {"a": 0.5, "b": 0.5, "c": 0.0}}
    table = divergence_table(target, {"base": ["a", "a"], "flower": ["b", "a"]}, trie, probs)
    # T = (1/2, 1/2), R = (1, 0), M = (3/4, 1/4):
    # JS = [1/2 ln(2/3) + 1/2 ln 2 + ln(4/3)] / 2; KL(T||R) with +0.5 on each count: T' = (1/2, 1/2),
    # R' = (5/6, 1/6), so 1/2 ln(3/5) + 1/2 ln 3.
    js = (0.5 * math.log(2 / 3) + 0.5 * math.log(2) + math.log(4 / 3)) / 2
    base = table.loc["Base"]
    assert base["title_JS"] == pytest.approx(js)
    assert base["title_KL_TR"] == pytest.approx(0.5 * math.log(3 / 5) + 0.5 * math.log(3))
    assert base["title_KL_RT"] == pytest.approx(5 / 6 * math.log(5 / 3) + 1 / 6 * math.log(1 / 3))
    # tokens: T has 1, 9, 2, 9 (one each of 1, 2; two 9s), R = a twice has 1, 9, 1, 9: T = (1/4, 1/4, 1/2)
    # over (1, 2, 9), R = (1/2, 0, 1/2), M = (3/8, 1/8, 1/2).
    token_js = (0.25 * math.log(2 / 3) + 0.25 * math.log(2) + 0.5 * math.log(4 / 3)) / 2
    assert base["token_JS"] == pytest.approx(token_js)
    assert table.loc["Flower", "title_JS"] == pytest.approx(0.0)
    assert table.loc["Flower", "title_JS_exact"] == pytest.approx(0.0) and np.isnan(base["title_JS_exact"])
    assert table.loc["Flower", "distinct"] == 2 and base["generated"] == 2
    with pytest.raises(ValueError, match="outside the target set"):
        divergence_table(target, {"base": ["z"]}, trie)


def test_frequency_matrix_shares_in_target_order():
    target = {"b": 1.0, "a": 3.0}
    freq = frequency_matrix(target, {"sft": ["b", "b", "a", "c"]})
    assert list(freq.index) == ["a", "b"]
    np.testing.assert_allclose(freq["target"], [0.75, 0.25])
    np.testing.assert_allclose(freq["sft"], [0.25, 0.5])  # "c" is outside T: counted in the total only


def test_figure_stage_imports_no_torch():
    """The figure rule runs in envs/report.yaml: its stage must import neither torch nor transformers."""
    import subprocess
    import sys

    code = (
        "import sys, flowrec.stages.distfit_figure; "
        "heavy = sorted({'torch', 'transformers', 'trl'} & set(sys.modules)); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_trie_logits_processor_walks_the_completion():
    trie = hand_trie()
    proc = trl.TrieLogitsProcessor(trie, prompt_len=2, eos_id=9)
    scores = torch.zeros(3, 12)
    prompt = torch.tensor([[7, 7], [7, 7], [7, 7]])
    out = proc(prompt, scores.clone())
    assert torch.isfinite(out).nonzero()[:, 1].unique().tolist() == [1, 2]  # the root's children
    step1 = torch.cat([prompt, torch.tensor([[1], [2], [2]])], 1)
    out = proc(step1, scores.clone())
    assert [torch.isfinite(r).nonzero().flatten().tolist() for r in out] == [[9], [3, 9], [3, 9]]
    step2 = torch.cat([step1, torch.tensor([[9], [9], [3]])], 1)  # rows 0 and 1 finished their title
    out = proc(step2, scores.clone())
    assert [torch.isfinite(r).nonzero().flatten().tolist() for r in out] == [[9], [9], [9]]
    fresh = trl.TrieLogitsProcessor(trie, prompt_len=2, eos_id=9)  # rebuilt from scratch
    assert torch.equal(fresh(step2, scores.clone()), out)


# ---- tiny end-to-end runs of the four tuning drivers -------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from flowrec.model import load_tokenizer
    from flowrec.prompts import history_free_prompt_ids

    torch.set_num_threads(1)
    tokenizer = load_tokenizer("tiny-random")
    target = sort_target({"Toy Story": 6.0, "Star Wars": 3.0, "Fargo": 2.0, "Contact": 1.0})
    trie = target_trie(target, tokenizer)
    settings = DistfitSettings.from_block(
        {"train_samples": 8, "batch_size": 4, "rl_generations": 4, "learning_rate": 1e-3}
    )
    return tokenizer, target, trie, history_free_prompt_ids(tokenizer), settings


def _changed(before: dict, model) -> bool:
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sft", "flower", "flower_published", "dpo", "grpo"])
def test_tuning_driver_end_to_end(tiny, tmp_path, method):
    from flowrec.model import load_base_model, load_tuned, save_tuned

    tokenizer, target, trie, prompt, settings = tiny
    model = load_base_model("tiny-random", device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    log_csv, loss_png = tmp_path / "log.csv", tmp_path / "loss.png"
    if method in ("sft", "flower", "flower_published"):
        tuning = draw_titles(target, settings.train_samples, settings.seed)
        train_with_loop(
            method, model, trie, prompt, tuning, target, settings, tokenizer.pad_token_id, log_csv, loss_png
        )
    else:
        train = trl.train_dpo if method == "dpo" else trl.train_grpo
        rows = train(model, tokenizer, trie, prompt, target, settings)
        assert [r["step"] for r in rows] == [1, 2]  # 8 samples / batch 4
        trl.write_training_log(rows, log_csv, loss_png, method)
    assert _changed(before, model)
    log = pd.read_csv(log_csv)
    assert (log["split"] == "train").sum() == 2 and np.isfinite(log["loss"]).all()
    assert (log.loc[log["split"] == "train", "grad_norm"] > 0).all()  # every method logs its grad norm
    # trl's own metrics, through the TrainerCallback (flowrec.distfit.trl_log), as further columns
    trl_metric = {"dpo": "rewards_margins", "grpo": "reward"}.get(method)
    if trl_metric is not None:
        assert np.isfinite(log[trl_metric]).all() and list(log.columns)[-1] == "split"
    assert loss_png.stat().st_size > 0
    save_tuned(model, tokenizer, tmp_path / "model", "tiny-random")
    tuned, _ = load_tuned(tmp_path / "model", device="cpu")
    titles = generate_titles(tuned, trie, prompt, 6, tokenizer.pad_token_id, seed=0, batch_size=4)
    assert len(titles) == 6 and set(titles) <= set(target)
    assert titles == generate_titles(tuned, trie, prompt, 6, tokenizer.pad_token_id, seed=0, batch_size=4)


def test_flower_sample_temperature_reaches_the_sampler(tiny, tmp_path, monkeypatch):
    """distfit.sample_temperature sets the temperature of the titles SubTB scores (default: on-policy)."""
    import dataclasses

    import flowrec.distfit.train as distfit_train

    seen = {}
    monkeypatch.setattr(
        distfit_train, "train", lambda model, loss, *args, **kwargs: seen.update(loss=loss, **kwargs)
    )
    tokenizer, target, trie, prompt, settings = tiny
    tuning = draw_titles(target, settings.train_samples, settings.seed)
    for temperature in (1.0, 2.0):
        hot = dataclasses.replace(settings, sample_temperature=temperature)
        train_with_loop(
            "flower",
            None,
            trie,
            prompt,
            tuning,
            target,
            hot,
            tokenizer.pad_token_id,
            tmp_path / "l.csv",
            tmp_path / "l.png",
        )
        # one FlowerLoss: the plain reward of the history-free prompt, every token a SubTB state
        assert seen["loss"].sample_temperature == temperature
        assert seen["loss"].lambda_ == settings.lambda_ and seen["loss"].reward == "plain"
        assert seen["loss"].granularity == 1 and seen["name"] == "flower"
        assert seen["loss"].normalise == "children" and seen["loss"].sft_weight == 1.0
    assert DistfitSettings.from_block({}).sample_temperature == 1.0
    # The ablation row: the same loss with SubTB's log pi over the vocabulary.
    train_with_loop(
        "flower_vocab",
        None,
        trie,
        prompt,
        tuning,
        target,
        settings,
        0,
        tmp_path / "v.csv",
        tmp_path / "v.png",
    )
    assert seen["loss"].normalise == "vocab" and seen["name"] == "flower_vocab"


def test_published_recipe_gets_its_settings_and_its_own_learning_rate(tiny, tmp_path, monkeypatch):
    """flower_published: the published recipe's loss with the distfit.published_* keys, at
    published_learning_rate; every other budget key is the one the other rows share."""
    import dataclasses

    import flowrec.distfit.train as distfit_train
    from flowrec.distfit.published import PublishedRQ1Loss

    seen = {}

    def fake_train(model, loss, train_data, valid_data, cfg, *args, **kwargs):
        seen.update(loss=loss, cfg=cfg, n=len(train_data), **kwargs)

    monkeypatch.setattr(distfit_train, "train", fake_train)
    tokenizer, target, trie, prompt, settings = tiny
    mine = dataclasses.replace(
        settings,
        published_learning_rate=2e-5,
        published_subtb_decay=0.9,
        published_replay_threshold=0.4,
        published_off_trie_log_reward=-12.0,
    )
    tuning = draw_titles(target, settings.train_samples, settings.seed)
    args = (None, trie, prompt, tuning, target, mine, 0, tmp_path / "p.csv", tmp_path / "p.png")
    train_with_loop("flower_published", *args)
    loss, cfg = seen["loss"], seen["cfg"]
    assert isinstance(loss, PublishedRQ1Loss) and seen["name"] == "flower_published"
    assert (loss.subtb_decay, loss.replay_threshold, loss.off_trie_log_reward) == (0.9, 0.4, -12.0)
    assert cfg.learning_rate == 2e-5 and seen["n"] == settings.train_samples
    assert (cfg.epochs, cfg.batch_size) == (settings.epochs, settings.batch_size)
    train_with_loop("sft", *args)
    assert seen["cfg"].learning_rate == settings.learning_rate
    defaults = DistfitSettings.from_block({})
    assert defaults.published_learning_rate == 1e-5 and defaults.published_off_trie_log_reward == -15.0


def test_distfit_jackknife_reproduces_the_table_and_holds_it():
    """Unit weights give the table's sampled columns; each interval is the jackknife t interval of the
    leave-group-out replicates around the table's value, so it contains it."""
    from flowrec.bootstrap import jackknife_interval, jackknife_labels, leave_group_out_weights
    from flowrec.distfit.evaluate import SAMPLED_COLUMNS, sampled_bounds, sampled_draws

    trie = hand_trie()
    target = {"a": 3.0, "b": 2.0, "c": 1.0}
    titles = ["a", "a", "b", "c", "a", "b", "b", "a"]
    table = divergence_table(target, {"sft": titles}, trie, jackknife=(4, 0, 0.95))
    row = table.iloc[0]
    point = sampled_draws(target, titles, trie, np.ones((1, len(titles))))
    replicates = sampled_draws(target, titles, trie, leave_group_out_weights(jackknife_labels(8, 4, 0)))
    for column in SAMPLED_COLUMNS:
        assert point[column][0] == pytest.approx(row[column], abs=1e-12), column
        assert row[f"{column}_lo"] <= row[column] <= row[f"{column}_hi"], column
        expected = jackknife_interval(row[column], replicates[column], 0.95, sampled_bounds(column, 3, 8))
        assert (row[f"{column}_lo"], row[f"{column}_hi"]) == expected, column
        assert row[f"{column}_lo"] >= (1.0 if column == "distinct" else 0.0), column  # cut to the range
    assert row["distinct_hi"] <= 3.0  # no more distinct titles than T has
    assert row["title_JS_hi"] > row["title_JS_lo"] and "title_JS_exact_lo" not in table.columns
    # a sample that is one title over and over has that title only in every replicate: no spread
    same = divergence_table(target, {"sft": ["a"] * 5}, trie, jackknife=(50, 0, 0.95)).iloc[0]
    assert same["distinct_lo"] == same["distinct_hi"] == 1.0
    assert same["title_JS_lo"] == same["title_JS"] == same["title_JS_hi"]
