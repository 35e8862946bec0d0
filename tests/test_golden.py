"""Files made once and committed decode byte for byte on whatever machine the tests run on."""

from __future__ import annotations

import pytest

from golden import DATA, FORMATS, MODELS, SAMPLES
from lmzip import LMZip, container, models


@pytest.fixture(scope="module")
def codecs(golden_model_dir):
    out = {"tiny": LMZip(str(golden_model_dir), batch_size=2)}
    if models.REGISTRY[models.DEFAULT_MODEL].installed():
        out["smollm2"] = LMZip(models.DEFAULT_MODEL, device="cpu")
    return out


@pytest.mark.parametrize("tag", list(MODELS))
@pytest.mark.parametrize("name", list(SAMPLES))
@pytest.mark.parametrize("version", list(FORMATS))
def test_golden_file_decodes(codecs, version, tag, name):
    if tag not in codecs:
        pytest.skip("default model not installed")
    blob = (FORMATS[version] / f"{tag}-{name}.lmz").read_bytes()
    assert codecs[tag].decompress(blob) == (DATA / f"{tag}-{name}.orig").read_bytes()


def test_golden_files_are_what_the_encoder_writes_now(codecs):
    """The encoder is as deterministic as the decoder: the tiny model's files are written again bit for
    bit, but for the model's name (the path of a temporary directory)."""
    for name, data in SAMPLES.items():
        now = container.parse(LMZip(codecs["tiny"].lm, context=32).compress(data))
        then = container.parse((DATA / f"tiny-{name}.lmz").read_bytes())
        now.header["model"]["name"] = then.header["model"]["name"]
        assert (now.header, now.entries, now.payloads) == (then.header, then.entries, then.payloads)


def test_an_older_revision_is_still_written_as_its_golden_files_hold(codecs):
    """``revision="int/2"`` (with v8's mixer, mix/2) writes, in today's container, the tables v8's golden
    files were coded with: the same chunks and payloads (the int/2 arithmetic did not move), and a
    header that names int/2."""
    for name, data in SAMPLES.items():
        now = container.parse(LMZip(codecs["tiny"].lm, context=32, revision="int/2", mix="mix/2").compress(data))
        then = container.parse((FORMATS["v8"] / f"tiny-{name}.lmz").read_bytes())
        assert (now.entries, now.payloads) == (then.entries, then.payloads)
        assert now.header["coding"] == then.header["coding"] == {**now.header["coding"], "engine": "int/2"}
    with pytest.raises(ValueError, match="revision"):
        LMZip(codecs["tiny"].lm, revision="int/9")


def test_an_older_mixer_is_still_written_as_its_golden_files_hold(codecs):
    """``mix="mix/2"`` writes the payloads of v9's golden files, which mix/2 coded, and names mix/2."""
    for name, data in SAMPLES.items():
        now = container.parse(LMZip(codecs["tiny"].lm, context=32, mix="mix/2").compress(data))
        then = container.parse((FORMATS["v9"] / f"tiny-{name}.lmz").read_bytes())
        assert (now.entries, now.payloads) == (then.entries, then.payloads)
        assert now.header["coding"] == then.header["coding"] == {**now.header["coding"], "mixer": "mix/2"}
    with pytest.raises(ValueError, match="revision"):
        LMZip(codecs["tiny"].lm, mix="mix/9")


def test_members_of_every_version_concatenate(codecs):
    """Files of v10, v9 (mixer mix/2), v8 (engine int/2), v7 (mixer mix/1), v6 (engine int/1) and v5
    written one after the other decode as one stream, each by its own rules."""
    parts = (("v10", "code"), ("v9", "text"), ("v8", "code"), ("v7", "binary"), ("v6", "code"), ("v5", "unicode"))
    blob = b"".join((FORMATS[v] / f"tiny-{name}.lmz").read_bytes() for v, name in parts)
    assert codecs["tiny"].decompress(blob) == b"".join(SAMPLES[name] for _, name in parts)
