"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer, saved as a model directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmzip import models, predictor

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def _tiny_llama_config():
    """SmolLM2's tokenizer and the config of a 2-layer Llama over its vocabulary."""
    import transformers

    gguf = models.REGISTRY["smollm2-135m"].gguf_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return tokenizer, transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (vocabulary 49152, random weights) with SmolLM2's tokenizer, as an HF directory."""
    import transformers

    tokenizer, config = _tiny_llama_config()
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # less flat than the default init, so tables are not uniform
        model.get_input_embeddings().weight.normal_(0, 0.1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_golden_model(folder: Path) -> Path:
    """The tiny Llama with weights drawn by numpy's PCG64 as multiples of 2**-10: the same model on
    every machine, so the golden files in tests/data decode everywhere (torch's own init may not)."""
    import numpy as np
    import transformers

    tokenizer, config = _tiny_llama_config()
    model = transformers.LlamaForCausalLM(config)
    rng = np.random.default_rng(2026)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            spread = 1024 if "norm" in name else 160
            base = 1024 if "norm" in name else 0
            p.copy_(torch.from_numpy((base + rng.integers(-spread, spread + 1, tuple(p.shape))) / 1024.0))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def golden_model_dir(tmp_path_factory) -> Path:
    return build_golden_model(tmp_path_factory.mktemp("golden-llama"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    return models.load(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(params=list(predictor.REVISIONS))
def revision(request) -> str:
    """Each integer-engine revision that still decodes: every one must keep its invariants."""
    return request.param
