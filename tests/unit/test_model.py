"""Model loading: tiny-random, LoRA, save/load round trip, clear errors, sources."""

from pathlib import Path

import pytest
import torch

from flowrec.model import LoraSettings, ModelSettings, load_base_model, load_tokenizer, load_tuned, save_tuned
from flowrec.model_source import EMBEDDED, TINY_RANDOM, resolve_model_source
from flowrec.settings import settings_from_block

INPUT = torch.tensor([[1, 520, 9531, 198, 30359, 365]])


def test_tiny_random_loads_with_the_smollm2_vocabulary(tokenizer) -> None:
    model = load_base_model(TINY_RANDOM, device="cpu")
    assert model.dtype == torch.float32 and model.training
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert model(INPUT).logits.shape == (1, INPUT.shape[1], len(tokenizer))
    # same name, same weights (load_tuned rebuilds LoRA bases from the name)
    again = load_base_model(TINY_RANDOM, device="cpu")
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    assert load_tokenizer(TINY_RANDOM) is tokenizer  # cached per process


def test_lora_wraps_and_freezes_the_base() -> None:
    model = load_base_model(TINY_RANDOM, LoraSettings(r=4, alpha=8, dropout=0.0), device="cpu")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("q_proj" in n for n in trainable) and any("down_proj" in n for n in trainable)
    lora_on = settings_from_block(ModelSettings, {"lora": True, "lora_r": 4}, "model")
    assert lora_on.lora_settings() == LoraSettings(4, 16, 0.05)
    assert settings_from_block(ModelSettings, {}, "model").lora_settings() is None
    with pytest.raises(ValueError, match="lora_rank"):
        settings_from_block(ModelSettings, {"lora_rank": 4}, "model")


def _perturb(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("lora", [False, True])
def test_save_tuned_load_tuned_round_trip(tmp_path: Path, tokenizer, lora: bool) -> None:
    torch.manual_seed(0)
    settings = LoraSettings(r=4, alpha=8, dropout=0.0) if lora else None
    model = load_base_model(TINY_RANDOM, settings, device="cpu")
    _perturb(model)  # a "trained" model: LoRA B starts at zero, so an untouched adapter proves nothing
    model.eval()
    with torch.no_grad():
        expected = model(INPUT).logits
    out = tmp_path / "model"
    save_tuned(model, tokenizer, out, TINY_RANDOM)
    assert (out / "flowrec_model.json").is_file()
    assert (out / ("adapter_config.json" if lora else "config.json")).is_file()
    assert (
        out.stat().st_mode & 0o777 == 0o755
    )  # readable by others, as every other output (not mkdtemp's 0700)
    loaded, loaded_tok = load_tuned(out, device="cpu")
    assert not loaded.training
    with torch.no_grad():
        got = loaded(INPUT).logits
    assert torch.allclose(got, expected, atol=1e-5)
    base = load_base_model(TINY_RANDOM, device="cpu").eval()
    with torch.no_grad():
        assert not torch.allclose(base(INPUT).logits, expected, atol=1e-3)  # the tuning was saved
    assert loaded_tok.padding_side == "left"
    assert loaded_tok("Heat (1995)\n").input_ids == tokenizer("Heat (1995)\n").input_ids
    # overwriting an existing model directory works and leaves no temporary folders behind
    save_tuned(model, tokenizer, out, TINY_RANDOM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_unknown_model_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="name_or_path"):
        load_base_model("no-such-org/no-such-model", device="cpu")
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        resolve_model_source(str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        resolve_model_source(str(tmp_path / "missing_dir"))
    with pytest.raises(FileNotFoundError, match="load_tuned|save_tuned"):
        load_tuned(tmp_path)


def test_resolve_model_source(tmp_path: Path) -> None:
    folder, gguf = resolve_model_source(EMBEDDED)
    assert gguf is not None and (Path(folder) / gguf).is_file()
    assert resolve_model_source(str(Path(folder) / gguf)) == (folder, gguf)
    assert resolve_model_source(TINY_RANDOM) == (folder, gguf)  # its tokenizer's source
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_source(str(tmp_path)) == (str(tmp_path), None)
    assert resolve_model_source("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        None,
    )


def test_gguf_tokenizer_cache_is_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer
) -> None:
    from transformers import AutoTokenizer

    from flowrec.model_source import load_pretrained

    monkeypatch.setenv("FLOWREC_CACHE", str(tmp_path))
    converted = load_pretrained(AutoTokenizer, EMBEDDED, "tokenizer")  # from the GGUF, then stored
    cached_dirs = list(tmp_path.glob("*/tokenizer"))
    assert len(cached_dirs) == 1 and not list(tmp_path.glob("*/.*.part"))
    cached = load_pretrained(AutoTokenizer, EMBEDDED, "tokenizer")
    assert str(cached_dirs[0]) in str(cached.name_or_path)
    texts = ["Heat (1995)\n", "Café Society <|im_end|>", " \n  x", "L'Âge d'or"]
    for tok in (cached, tokenizer):
        assert [tok(t, add_special_tokens=False).input_ids for t in texts] == [
            converted(t, add_special_tokens=False).input_ids for t in texts
        ]
        assert tok.chat_template == converted.chat_template and tok.eos_token_id == converted.eos_token_id
        assert len(tok) == len(converted)


@pytest.mark.slow
def test_embedded_gguf_saves_and_reloads(tmp_path: Path) -> None:
    """SmolLM2 from the GGUF (dequantised; transformers marks it quantized) saves like any model."""
    model = load_base_model(EMBEDDED, device="cpu").eval()
    assert model.dtype == torch.float32 and getattr(model, "hf_quantizer", None) is None
    tokenizer = load_tokenizer(EMBEDDED)
    with torch.no_grad():
        expected = model(INPUT).logits
    save_tuned(model, tokenizer, tmp_path / "model", EMBEDDED)
    loaded, _ = load_tuned(tmp_path / "model", device="cpu")
    with torch.no_grad():
        assert torch.equal(loaded(INPUT).logits, expected)


def test_freeze_layers_trains_only_the_upper_blocks() -> None:
    """Full fine-tuning: embeddings and the lowest blocks get no gradient, every upper block does."""
    model = load_base_model(TINY_RANDOM, device="cpu", freeze_layers=1)
    model(INPUT).logits.sum().backward()
    grads = {n: p.grad is not None for n, p in model.named_parameters()}
    assert not grads["model.embed_tokens.weight"]
    assert not any(g for n, g in grads.items() if n.startswith("model.layers.0."))
    assert all(g for n, g in grads.items() if n.startswith("model.layers.1."))
    with pytest.raises(ValueError, match=r"model.freeze_layers: 2; the model has 2 transformer blocks"):
        load_base_model(TINY_RANDOM, device="cpu", freeze_layers=2)


def test_freeze_layers_with_lora_puts_adapters_on_the_upper_blocks_only(tmp_path: Path, tokenizer) -> None:
    model = load_base_model(
        TINY_RANDOM, LoraSettings(r=4, alpha=8, dropout=0.0), device="cpu", freeze_layers=1
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".layers.1." in n for n in trainable)
    # every linear layer of the block, as all-linear does
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }  # fmt: skip
    _perturb(model)
    model.eval()
    with torch.no_grad():
        expected = model(INPUT).logits
    save_tuned(model, tokenizer, tmp_path / "model", TINY_RANDOM)
    loaded, _ = load_tuned(tmp_path / "model", device="cpu")
    with torch.no_grad():
        assert torch.allclose(loaded(INPUT).logits, expected, atol=1e-5)
