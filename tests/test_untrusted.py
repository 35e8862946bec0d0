"""Untrusted files run no code: decoding never unpickles, never runs a model's own code, and never
opens a path that a file's header names unless the user names it too."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
import transformers

import damage
from golden import DATA
from lmzip import LMZip, ModelError, codec, models


def _refuse(*args, **kwargs):
    raise AssertionError("decoding unpickled something")


class _NoUnpickler:
    def __init__(self, *args, **kwargs):
        _refuse()


class _Payload:
    """Unpickled, it creates the file at ``path``: what a hostile checkpoint could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture
def fresh_loads(monkeypatch):
    """Models load afresh in this test (not from the codec's cache of loaded models), and every
    call into transformers' loaders is recorded."""
    codec._load.cache_clear()
    calls = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        real = cls.from_pretrained

        def spy(*args, _real=real, _cls=cls.__name__, **kwargs):
            calls.append((_cls, args, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    yield calls
    codec._load.cache_clear()


def test_decoding_never_unpickles(monkeypatch, fresh_loads, golden_model_dir):
    """Loading the model a file names and decoding it unpickle nothing (numba's own compile
    cache, which lmzip wrote itself, is read once before the patches)."""
    blob = (DATA / "tiny-text.lmz").read_bytes()
    codec.decompress(blob, str(golden_model_dir))  # numba compiles, or loads its cache
    codec._load.cache_clear()
    fresh_loads.clear()
    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, _refuse)
    monkeypatch.setattr(pickle, "Unpickler", _NoUnpickler)
    monkeypatch.setattr(torch, "load", _refuse)
    assert codec.decompress(blob, str(golden_model_dir)) == (DATA / "tiny-text.orig").read_bytes()
    if models.REGISTRY[models.DEFAULT_MODEL].installed():  # the default model, named by the file
        assert codec.decompress((DATA / "smollm2-code.lmz").read_bytes()) == (DATA / "smollm2-code.orig").read_bytes()
    assert fresh_loads  # the model really was loaded here, under the patches


def test_a_model_folder_is_read_without_its_code_and_without_pickles(fresh_loads, tiny_model_dir, tmp_path):
    """A folder whose checkpoint is a pickle (one that runs code when unpickled) is refused, and a
    config asking for remote code does not get its code run."""
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    for f in pickled.glob("*.safetensors"):
        f.unlink()
    unpickled = tmp_path / "unpickled"
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(str(unpickled))))
    with pytest.raises(ModelError, match="cannot load model"):
        models.load(str(pickled))
    assert not unpickled.exists()

    remote = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, remote)
    sentinel = tmp_path / "ran"
    (remote / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n")
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.Evil", "AutoConfig": "evil.EvilConfig"}
    (remote / "config.json").write_text(json.dumps(config))
    try:
        models.load(str(remote))
    except ModelError:
        pass  # refusing is as good as loading the stock code
    assert not sentinel.exists()
    assert fresh_loads and all(kw.get("trust_remote_code") is False for _, _, kw in fresh_loads)
    assert all(kw.get("use_safetensors") is True for cls, _, kw in fresh_loads if cls == "AutoModelForCausalLM")


def test_a_path_in_the_header_is_never_opened_unless_named(monkeypatch, tiny_lm, tiny_model_dir, tmp_path):
    blob = LMZip(tiny_lm, chunk_tokens=40).compress(b"A file made with a model given by its path.\n" * 3)
    bait = tmp_path / "bait"
    shutil.copytree(tiny_model_dir, bait)
    opened = []
    monkeypatch.setattr(codec, "_load", lambda spec, *a: opened.append(spec) or _refuse())
    for name in (str(tiny_model_dir), str(bait), "../../etc/passwd", str(bait / "model.gguf")):
        lured = damage.reseal_header(blob, lambda h, n=name: h["model"].update(name=n))
        with pytest.raises(ModelError, match="-m/--model"):
            codec.decompress(lured)
    assert opened == []
    monkeypatch.undo()
    assert codec.decompress(blob, str(tiny_model_dir)) == b"A file made with a model given by its path.\n" * 3
