"""lmzip bpc: the paper's windowing rule, checked against a brute-force reimplementation."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch
from click.testing import CliRunner

from lmzip.analysis import bpc
from lmzip.cli import main

DOCS = ["The first document talks about rabbits and watches. " * 6,
        "def f(x):\n    return x * 2  # code, too\n" * 5,
        "",
        "Ein dritter Text über Käse, 日本語 und Mathematik: $e^{i\\pi} + 1 = 0$. " * 4]


def brute_force_bits(lm, stream: list[int], window: int, stride: int) -> float:
    """The rule as the paper states it, one window at a time, each scored position summed by hand."""
    block = window + 1
    count = math.floor((len(stream) - block) / stride + 1)
    nats = 0.0
    with torch.no_grad():
        for k in range(count):
            ids = torch.tensor([stream[k * stride : k * stride + block]])
            logp = torch.log_softmax(lm.module(input_ids=ids[:, :-1]).logits[0].float(), -1)
            targets = range(window) if k == 0 else range(window - stride, window)
            for j in targets:
                nats -= float(logp[j, ids[0, j + 1]])
    return nats / math.log(2)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"content": d, "subset": "test", "meta": {}}) + "\n" for d in DOCS))
    return path


def test_paper_method_equals_brute_force(tiny_lm, corpus):
    window, stride = 40, 16
    got = bpc.measure(tiny_lm, str(corpus), window=window, stride=stride, batch_size=3)
    stream = [t for d in DOCS for t in tiny_lm.tokenizer.encode(d)]
    want = brute_force_bits(tiny_lm, stream, window, stride)
    assert got.tokens == len(stream)
    assert got.characters == sum(len(d) for d in DOCS)
    assert got.bits == pytest.approx(want, rel=1e-6)
    assert got.bpc == pytest.approx(want / got.characters, rel=1e-6)
    count = (len(stream) - window - 1) // stride + 1
    assert got.scored_tokens == window + (count - 1) * stride


def test_windows_rule_by_hand():
    assert bpc.windows(10, window=4, stride=2) == [(0, 5, 1), (2, 7, 5), (4, 9, 7)]  # token 9 is never scored
    assert bpc.windows(10, window=4, stride=2, method="all")[-1] == (5, 10, 9)
    assert bpc.windows(4, window=4, stride=2) == []
    assert bpc.windows(4, window=4, stride=2, method="all") == [(0, 4, 1)]


def test_all_method_scores_every_token_after_the_first(tiny_lm, corpus):
    got = bpc.measure(tiny_lm, str(corpus), window=40, stride=16, method="all")
    assert got.scored_tokens == got.tokens - 1


def test_too_short_for_a_window_is_a_clear_error(tiny_lm, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("tiny")
    from lmzip.errors import InputError

    with pytest.raises(InputError, match="fewer than one window"):
        bpc.measure(tiny_lm, str(short))


def test_cli_writes_the_table_correlate_reads(tiny_model_dir, corpus):
    result = CliRunner().invoke(main, ["bpc", str(corpus), "-m", str(tiny_model_dir), "--window", "40",
                                       "--stride", "16", "--area", "mixed"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert rows[0]["area"] == "mixed" and rows[0]["method"] == "paper" and float(rows[0]["bpc"]) > 0
    assert set(rows[0]) >= {"model", "corpus", "characters", "bytes", "tokens", "bits", "bpc", "bits_per_byte",
                            "window", "stride"}


def test_int8_is_refused_off_the_cpu():
    from lmzip import ModelError, models

    with pytest.raises(ModelError, match="CPU only"):
        models.resolve_dtype("int8", torch.device("cuda"))


def test_unsupported_architecture_is_named():
    import transformers

    from lmzip import ModelError, models

    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(ModelError, match="gpt2"):
        models.check_supported(gpt2)
