"""The lockstep step loop computes each supported architecture's own forward pass."""

from __future__ import annotations

import pytest
import torch
import transformers

from lmzip.errors import ModelError
from lmzip.transformer import Stepper, _output_head, check_supported

VOCAB, STEPS, ROWS = 300, 40, 3


def _llama():
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2))


def _qwen2():  # attention projections with a bias
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2))


def _gemma3():
    """Sliding layers with a window much shorter than the run, q/k norms, four norms a layer, logit soft-capping."""
    model = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, sliding_window=8, query_pre_attn_scalar=16,
        final_logit_softcapping=30.0))
    with torch.no_grad():  # Gemma norms initialise to zero (scale 1); make them matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    return model


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("build", [_llama, _qwen2, _gemma3], ids=["llama", "qwen2", "gemma3"])
def test_stepper_matches_the_full_forward_pass(build, device):
    torch.manual_seed(0)
    model = build().eval().to(device)
    ids = torch.randint(0, VOCAB, (ROWS, STEPS), device=device)
    with torch.inference_mode():
        reference = model(input_ids=ids).logits
        step = Stepper(model, ROWS, STEPS)
        stepped = torch.stack([step(ids[:, t]) for t in range(STEPS)], dim=1)
    # Not bit-equal (other kernels and order of operations), but the same function of the tokens.
    assert torch.allclose(stepped, reference, atol=1e-5, rtol=1e-4)
    assert (stepped.argmax(-1) == reference.argmax(-1)).all()


def test_stepper_reads_only_the_cache_slots_it_wrote():
    """Garbage in the unwritten slots (NaN here) changes nothing: encoder and decoder never depend on it."""
    torch.manual_seed(0)
    model = _gemma3().eval()  # sliding windows: the slice start moves too
    ids = torch.randint(0, VOCAB, (ROWS, STEPS))
    with torch.inference_mode():
        clean, dirty = Stepper(model, ROWS, STEPS), Stepper(model, ROWS, STEPS)
        dirty.k.fill_(float("nan"))
        dirty.v.fill_(float("nan"))
        for t in range(STEPS):
            assert torch.equal(clean(ids[:, t]), dirty(ids[:, t]))


def test_output_head_is_onednn_on_cpu_in_float32_and_the_module_elsewhere():
    """Engine /3's one kernel choice: deterministic, and the same function as the model's own head."""
    torch.manual_seed(0)
    model = _llama().eval()
    head = _output_head(model)
    assert (head is not model.lm_head) == torch.backends.mkldnn.is_available()
    x = torch.randn(5, 64)
    with torch.inference_mode():
        assert torch.equal(head(x), head(x.clone()))
        assert torch.allclose(head(x), model.lm_head(x), atol=1e-5)
    assert _output_head(model.to(torch.bfloat16)) is model.lm_head


def _one_layer(build, **config):
    """With one layer, a cached key or value depends only on its token and position, so a
    window's cache can be checked against a fresh forward pass over the tokens it kept."""
    model = build()
    cls, cfg = type(model), model.config
    cfg.num_hidden_layers = 1
    for key, value in config.items():
        setattr(cfg, key, value)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:1]
    return cls(cfg)


@pytest.mark.parametrize("build", [
    _llama, _qwen2, _gemma3, lambda: _gemma3_global(),
], ids=["llama", "qwen2", "gemma3-sliding", "gemma3-global"])
def test_window_predicts_from_the_start_token_and_the_newest_tokens(build):
    """Past a full cache, each step equals a fresh pass over the start token and the kept tokens."""
    torch.manual_seed(0)
    model = _one_layer(build).eval()
    slots, steps = 12, 40
    ids = torch.randint(0, VOCAB, (ROWS, steps))
    kept: list[int] = []  # the positions in ids that the cache holds, as the window moves
    with torch.inference_mode():
        step = Stepper(model, ROWS, slots)
        for t in range(steps):
            if len(kept) == slots:
                kept = kept[:1] + kept[-(slots // 2):]
            kept.append(t)
            reference = model(input_ids=ids[:, kept]).logits[:, -1]
            assert torch.allclose(step(ids[:, t]), reference, atol=1e-5, rtol=1e-4), t
    assert step.t < slots and len(kept) < slots


def _gemma3_global():
    model = _gemma3()
    model.config.layer_types = ["full_attention"] * model.config.num_hidden_layers
    return model


def test_unsupported_architecture_is_named():
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(ModelError, match="gpt2"):
        check_supported(gpt2)
