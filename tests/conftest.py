"""Shared fixtures: the real SmolLM2 tokenizer (loaded once) and the tiny random Llama."""

import os

# No model hub in tests: fail fast on hub ids instead of waiting for connection retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from flowrec.model import load_tokenizer, tiny_random_model  # noqa: E402
from flowrec.model_source import TINY_RANDOM  # noqa: E402

# Two CPU cores are shared by everything on the machine: keep tests single-threaded.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    """The SmolLM2 tokenizer from the embedded GGUF (seconds to load: once per session)."""
    return load_tokenizer(TINY_RANDOM)


@pytest.fixture()
def tiny_model(tokenizer):
    """A fresh tiny random Llama with the SmolLM2 vocabulary, fp32, eval mode, seed 0."""
    return tiny_random_model(tokenizer, seed=0).eval()
