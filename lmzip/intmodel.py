"""The model's forward pass in exact integer arithmetic: the same integers on any machine.

Every value between the token ids and the logits is an integer, or a row of integer mantissas
with one power-of-two exponent for the row (``value = m * 2**e``), so that a row's numbers
depend on that row's tokens alone: never on the batch, the other rows, the thread count, the
block length or the kernel that ran. The rules, each chosen for that invariance:

- Weights are int8, per output channel, with an integer multiplier per channel and one shift
  per layer (gemmlowp's requantisation). They are quantised once at load, from the float32
  weights transformers de-quantises from the GGUF, with IEEE float64 basic operations only.
- Activations entering a matmul are rows of mantissas ``|m| <= 2**14`` (about 15 bits), one
  exponent per row, found with an integer max and an integer bit length, and rounded half up.
- Matmuls are exact integer sums (``exact.py``): whatever order a kernel adds in, the result is
  the same integer.
- The residual stream is int64 fixed point, ``2**-FH``; RMSNorm uses an integer mean of squares
  and an integer square root; SiLU and GELU-tanh are a table on a ``2**-12`` grid times the
  input; RoPE is an integer table of slot positions; attention's softmax is an integer exp
  table over scores in ``2**-12`` nats, with the KV cache as mantissas of 14 bits (engine
  revision int/1) or 7 (int/2, ``KV``).
- Logits leave as int64 fixed point in ``2**-12`` nats; ``quantize.int_intervals`` turns them
  into the coder's frequencies through another integer exp table.

The KV cache is a window of ``slots`` positions that keeps its newest half (engine revisions int/1
and int/2, the float engine's schedule) or seven eighths (int/3) when it moves (see ``Cache``):
a function of the position alone, so a block of tokens (the encoder's prefill) and one token a
step (the decoder) compute the same integers. Supported families: Llama (SmolLM2)
and Gemma 3, without logit soft-capping.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import kernels
from .errors import ModelError
from .exact import Gemm

# The revision of the quantisation itself (``IntModel.from_module``): the disk cache of a model's
# integers is keyed by it. The engine revisions (``predictor.REVISIONS``) share these integers.
QUANTISATION = "int/1"
MANT = kernels.MANT  # activation mantissas: |m| <= 2**MANT = 2**14
FH = 24  # residual stream: int64 fixed point with FH fractional bits
FS = 12  # scores and logits: fixed point with FS fractional bits (nats)
ATT_ONE = 20  # attention weights: exp(0) = 2**ATT_ONE
GATE_X = 12  # the activation table's grid: 2**-GATE_X, over |x| <= GATE_RANGE
GATE_RANGE = 16
GATE_ONE = 15  # the table's gate values: 1 = 2**GATE_ONE
ROPE_ONE = 14  # cos and sin: 1 = 2**ROPE_ONE
MULT_BITS = 15  # per-channel and per-norm multipliers are below 2**MULT_BITS

_POW2 = torch.tensor([1 << k for k in range(63)], dtype=torch.int64)


# -- integer helpers ------------------------------------------------------------------------

def bit_length(x: torch.Tensor) -> torch.Tensor:
    """``int.bit_length`` of each non-negative int64: the number of powers of two <= x."""
    return torch.searchsorted(_POW2.to(x.device), x.contiguous(), right=True)


def shift(x: torch.Tensor, s: torch.Tensor | int) -> torch.Tensor:
    """``x * 2**-s`` rounded half up, for int64 ``x`` and a broadcastable shift ``s`` of either sign."""
    s = torch.as_tensor(s, dtype=torch.int64, device=x.device)
    right = s.clamp(0, 62)
    left = (-s).clamp(0, 62)
    half = torch.bitwise_right_shift(torch.bitwise_left_shift(torch.ones_like(right), right), 1)
    return torch.bitwise_left_shift(torch.bitwise_right_shift(x + half, right), left)


def normalize(x: torch.Tensor, bits: int = MANT) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``(..., n)`` of int64 to ``(m, s)``: ``x ~ m * 2**s`` with ``|m| <= 2**bits``."""
    s = bit_length(x.abs().amax(-1)) - bits  # (...,)
    return shift(x, s[..., None]), s


def quarters(num: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Attention's output: ``4 * num / total`` rounded half up, of weighted values ``num (..., d)``
    (integers, any dtype) and their softmax totals ``(...)``, as int64."""
    return torch.div(num.long() * 8 + total[..., None], 2 * total[..., None], rounding_mode="floor")


def narrow(m: torch.Tensor, kv: KV) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``(..., n)`` of mantissas to a cache's ``kv.bits``-bit mantissas, clamped to ``+-kv.top``
    so that they fit its integer type, and the exponents' change ``(...)``."""
    r, s = normalize(m, kv.bits)
    return r.clamp(-kv.top, kv.top), s


def isqrt(v: torch.Tensor) -> torch.Tensor:
    """``floor(sqrt(v))`` of non-negative int64 below 2**62, exactly (a float guess, corrected)."""
    r = torch.sqrt(v.double()).floor().long()
    for _ in range(2):
        r = torch.where(r * r > v, r - 1, r)
        r = torch.where((r + 1) * (r + 1) <= v, r + 1, r)
    return r


# -- load-time quantisation (IEEE float64 basic operations, then integers) -----------------

def _mantissa(x: float, bits: int) -> tuple[int, int]:
    """``x ~ m * 2**-z`` with integer ``m < 2**bits``: one positive scale as a multiplier and shift."""
    z = bits - math.frexp(x)[1]
    return int(round(x * 2.0**z)), z


def _multipliers(scale: np.ndarray) -> tuple[np.ndarray, int]:
    """Positive float64 scales as integer multipliers below 2**MULT_BITS sharing one shift ``z``."""
    z = MULT_BITS - math.frexp(float(scale.max()))[1]
    return np.rint(scale * 2.0**z).astype(np.int64), z


@dataclass
class Linear:
    """An int8 weight ``(N, K)`` with multipliers ``(N,)``: ``W[n] ~ q[n] * mult[n] * 2**-z``."""

    q: np.ndarray  # int8 (N, K)
    mult: np.ndarray  # int64 (N,)
    z: int

    @classmethod
    def quantize(cls, weight: torch.Tensor, extra: float = 1.0) -> Linear:
        w = weight.detach().to("cpu", torch.float64).numpy()
        amax = np.abs(w).max(axis=1)
        scale = np.where(amax > 0, amax / 127.0, 1.0)
        q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
        mult, z = _multipliers(scale * extra)
        return cls(q, mult, z)


@dataclass
class Norm:
    """An RMSNorm: gains as integers ``g ~ G * 2**-z``, and its epsilon as ``eps ~ em * 2**-ez``."""

    gain: np.ndarray  # int64 (n,)
    z: int
    eps_m: int
    eps_z: int

    @classmethod
    def from_module(cls, norm: torch.nn.Module, offset: float) -> Norm:
        g = norm.weight.detach().to("cpu", torch.float64).numpy() + offset
        z = MULT_BITS - math.frexp(float(np.abs(g).max()) or 1.0)[1]
        eps_m, eps_z = _mantissa(float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))), 20)
        return cls(np.rint(g * 2.0**z).astype(np.int64), z, eps_m, eps_z)


def _gate_table(name: str) -> np.ndarray:
    """``gate(x)`` on the grid ``x = i * 2**-GATE_X``, ``|x| <= GATE_RANGE``, in units of 2**-GATE_ONE."""
    x = np.arange(-GATE_RANGE << GATE_X, (GATE_RANGE << GATE_X) + 1, dtype=np.float64) / 2.0**GATE_X
    if name == "silu":
        g = 1.0 / (1.0 + np.exp(-x))
    elif name in ("gelu_pytorch_tanh", "gelu_tanh"):
        g = 0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    else:
        raise ModelError(f"activation '{name}' is not supported by the integer engine")
    return np.rint(g * 2.0**GATE_ONE).astype(np.int64)


def _exp_table(one: int) -> np.ndarray:
    """``exp(-d)`` on the grid ``d = i * 2**-FS``, in units of 2**-one, until it rounds to 0."""
    d = np.arange(int((one + 1) * math.log(2) * 2**FS) + 1, dtype=np.float64) / 2.0**FS
    return np.rint(np.exp(-d) * 2.0**one).astype(np.int64)


@dataclass(frozen=True)
class KV:
    """How a ``Cache`` holds keys and values: mantissas of ``bits`` bits, ``|m| <= top``, in ``dtype``."""

    bits: int
    top: int
    dtype: torch.dtype


# int/1's cache: the projections' 14-bit mantissas as they are (``top`` never binds), 35,640 bytes a
# row and slot for SmolLM2. int/2's: narrowed to 7 bits and clamped to int8, 18,360 bytes; on 8
# chunks of 2048 tokens (4 areas, a 512-token window) it cost 0.13% more bits (57,166 against
# 57,092), and its attention reads half the memory.
KV16 = KV(MANT, 1 << MANT, torch.int16)
KV8 = KV(7, 127, torch.int8)
QUERY = KV16  # rotated queries: 14-bit mantissas, as every activation (never stored)


@dataclass(frozen=True)
class Revision:
    """What an engine revision fixes beside the model's integers: how its ``Cache`` holds keys and
    values (``kv``), and the eighths of the window's slots a move keeps (``keep_eighths``)."""

    kv: KV
    keep_eighths: int

    def keep(self, slots: int) -> int:
        """The newest tokens a move of a ``slots``-slot window keeps beside the sink: never more than
        ``slots - 2``, so that a slot is free for the next token."""
        return min(slots * self.keep_eighths // 8, slots - 2)


MAX_SLOTS = 4096  # the longest KV window: RoPE tables cover slots 0..MAX_SLOTS-1
MIN_SLOTS = 3  # the sink, a kept token and a free slot


def _rope_params(config, kind: str) -> tuple[str, float, float]:
    """``(kind, theta, linear factor)`` of a layer kind's rotary embedding, from the model config."""
    params = getattr(config, "rope_parameters", None) or {}
    params = params.get(kind, params) if isinstance(params.get(kind), dict) else params
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    rope_type = params.get("rope_type", "default")
    if rope_type not in ("default", "linear"):
        raise ModelError(f"RoPE type '{rope_type}' is not supported by the integer engine")
    return kind, theta, float(params.get("factor", 1.0)) if rope_type == "linear" else 1.0


def _rope_table(theta: float, factor: float, head_dim: int) -> np.ndarray:
    """``(2, MAX_SLOTS, head_dim // 2)`` int64: cos and sin of each slot's angles, 1 = 2**ROPE_ONE."""
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim) / factor
    angle = np.arange(MAX_SLOTS, dtype=np.float64)[:, None] * inv[None, :]
    return np.rint(np.stack([np.cos(angle), np.sin(angle)]) * 2.0**ROPE_ONE).astype(np.int64)


# -- the model ------------------------------------------------------------------------------

@dataclass
class Layer:
    kind: str  # "full_attention" or "sliding_attention"
    attn_norm: Norm
    q: Linear
    k: Linear
    v: Linear
    o: Linear
    mlp_norm: Norm  # Llama: post_attention_layernorm; Gemma 3: pre_feedforward_layernorm
    gate: Linear
    up: Linear
    down: Linear
    q_norm: Norm | None = None  # Gemma 3
    k_norm: Norm | None = None
    post_attn_norm: Norm | None = None  # Gemma 3's sandwich norms
    post_mlp_norm: Norm | None = None


@dataclass
class Config:
    """The integers that shape the forward pass (hashed into the fingerprint)."""

    family: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    sliding_window: int  # 0 for none
    activation: str
    rope: tuple  # ((layer kind, theta, linear factor), ...)


@dataclass
class IntModel:
    """A model quantised for the integer engine: every number it computes with is an integer."""

    config: Config
    embed: Linear  # the token embedding, per token row, scaled (Gemma: by sqrt(hidden))
    layers: list[Layer]
    norm: Norm
    head: Linear
    score: tuple[int, int]  # attention's scaling as (multiplier, shift)
    gate_table: np.ndarray
    att_exp: np.ndarray
    logit_exp: np.ndarray
    rope: dict[str, np.ndarray]  # layer kind -> _rope_table

    @classmethod
    def from_module(cls, module: torch.nn.Module) -> IntModel:
        """Quantise a transformers Llama or Gemma 3 causal LM."""
        c = module.config
        family = {"llama": "llama", "gemma3_text": "gemma3"}.get(c.model_type)
        if family is None:
            raise ModelError(f"architecture '{c.model_type}' is not supported by the integer engine (llama, gemma3_text)")
        if getattr(c, "final_logit_softcapping", None) or getattr(c, "attn_logit_softcapping", None):
            raise ModelError("logit soft-capping is not supported by the integer engine")
        if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
            raise ModelError("linear layers with a bias are not supported by the integer engine")
        gemma = family == "gemma3"
        offset = 1.0 if gemma else 0.0
        kinds = list(getattr(c, "layer_types", None) or ["full_attention"] * c.num_hidden_layers)
        attn0 = module.model.layers[0].self_attn
        head_dim = attn0.head_dim
        config = Config(family, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, head_dim,
                        int(getattr(c, "sliding_window", 0) or 0) if gemma else 0,
                        getattr(c, "hidden_activation", None) or c.hidden_act,
                        tuple(_rope_params(c, k) for k in sorted(set(kinds))))
        layers = []
        for kind, layer in zip(kinds, module.model.layers):
            a, m = layer.self_attn, layer.mlp
            layers.append(Layer(
                kind, Norm.from_module(layer.input_layernorm, offset),
                Linear.quantize(a.q_proj.weight), Linear.quantize(a.k_proj.weight),
                Linear.quantize(a.v_proj.weight), Linear.quantize(a.o_proj.weight),
                Norm.from_module(layer.pre_feedforward_layernorm if gemma else layer.post_attention_layernorm, offset),
                Linear.quantize(m.gate_proj.weight), Linear.quantize(m.up_proj.weight), Linear.quantize(m.down_proj.weight),
                q_norm=Norm.from_module(a.q_norm, offset) if gemma else None,
                k_norm=Norm.from_module(a.k_norm, offset) if gemma else None,
                post_attn_norm=Norm.from_module(layer.post_attention_layernorm, offset) if gemma else None,
                post_mlp_norm=Norm.from_module(layer.post_feedforward_layernorm, offset) if gemma else None,
            ))
        embed_scale = float(c.hidden_size) ** 0.5 if gemma else 1.0
        return cls(
            config, Linear.quantize(module.model.embed_tokens.weight, embed_scale), layers,
            Norm.from_module(module.model.norm, offset), Linear.quantize(module.lm_head.weight),
            _mantissa(float(attn0.scaling), MULT_BITS), _gate_table(config.activation),
            _exp_table(ATT_ONE), _exp_table(30),
            {kind: _rope_table(theta, factor, head_dim) for kind, theta, factor in config.rope},
        )

    @property
    def vocab(self) -> int:
        return self.head.q.shape[0]

    def arrays(self) -> dict[str, np.ndarray | int | str]:
        """Every integer of the model by name: what the fingerprint hashes and the disk cache stores."""
        out: dict = {f"config.{k}": v for k, v in vars(self.config).items()}
        out["score"] = np.array(self.score, dtype=np.int64)
        for name in ("gate_table", "att_exp", "logit_exp"):
            out[name] = getattr(self, name)
        for kind, table in self.rope.items():
            out[f"rope.{kind}"] = table

        def put(prefix, obj):
            for k, v in vars(obj).items():
                if isinstance(v, (Linear, Norm)):
                    put(f"{prefix}.{k}", v)
                elif v is not None and k != "kind":
                    out[f"{prefix}.{k}"] = v
        for name in ("embed", "norm", "head"):
            put(name, getattr(self, name))
        for i, layer in enumerate(self.layers):
            out[f"layers.{i}.kind"] = layer.kind
            put(f"layers.{i}", layer)
        return out

    def save(self, path: Path) -> None:
        """Write every integer to one file (the disk cache; ``load`` reads it back): a length, a
        JSON index of the arrays (dtype, shape, offset) and the other values, then the arrays'
        bytes, each at a multiple of 64. One read and no per-array parsing: a start-up of tenths
        of a second where ``np.savez``'s zip took most of one."""
        arrays, values, offset = {}, {}, 0
        for k, v in self.arrays().items():
            if isinstance(v, np.ndarray):
                arrays[k] = (v.dtype.str, list(v.shape), offset)
                offset += -(-v.nbytes // 64) * 64
            else:
                values[k] = repr(v)
        head = json.dumps({"arrays": arrays, "values": values}).encode()
        start = -(-(8 + len(head)) // 64) * 64
        with open(path, "wb") as f:
            f.write(len(head).to_bytes(8, "little") + head)
            for k, v in self.arrays().items():
                if isinstance(v, np.ndarray):
                    f.seek(start + arrays[k][2])
                    f.write(np.ascontiguousarray(v).tobytes())
            f.truncate(start + offset)

    @classmethod
    def load(cls, path: Path) -> IntModel:
        """The model ``save`` wrote. Its arrays are views of the file mapped copy-on-write: pages
        come from the page cache as they are read, and nothing writes back (0.2 s to read it whole)."""
        with open(path, "rb") as f:
            data = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY), dtype=np.uint8)
        n = int.from_bytes(data[:8].tobytes(), "little")
        index = json.loads(data[8 : 8 + n].tobytes())
        start = -(-(8 + n) // 64) * 64
        d = {k: ast.literal_eval(v) for k, v in index["values"].items()}
        for k, (dtype, shape, offset) in index["arrays"].items():
            size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            d[k] = data[start + offset : start + offset + size].view(dtype).reshape(shape)

        def lin(p):
            return Linear(d[f"{p}.q"], d[f"{p}.mult"], d[f"{p}.z"])

        def norm(p):
            return Norm(d[f"{p}.gain"], d[f"{p}.z"], d[f"{p}.eps_m"], d[f"{p}.eps_z"]) if f"{p}.gain" in d else None

        config = Config(**{k[7:]: v for k, v in d.items() if k.startswith("config.")})
        layers = []
        for i in range(sum(k.endswith(".kind") for k in d)):
            p = f"layers.{i}"
            layers.append(Layer(d[f"{p}.kind"], norm(f"{p}.attn_norm"), *(lin(f"{p}.{n}") for n in "qkvo"),
                                norm(f"{p}.mlp_norm"), *(lin(f"{p}.{n}") for n in ("gate", "up", "down")),
                                norm(f"{p}.q_norm"), norm(f"{p}.k_norm"), norm(f"{p}.post_attn_norm"),
                                norm(f"{p}.post_mlp_norm")))
        return cls(config, lin("embed"), layers, norm("norm"), lin("head"), tuple(int(x) for x in d["score"]),
                   d["gate_table"], d["att_exp"], d["logit_exp"],
                   {k[5:]: v for k, v in d.items() if k.startswith("rope.")})

    def fingerprint(self) -> str:
        """128 bits of SHA-256 over every integer the engine computes with."""
        h = hashlib.sha256()
        for k, v in sorted(self.arrays().items()):
            h.update(k.encode())
            h.update(np.ascontiguousarray(v) if isinstance(v, np.ndarray) else repr(v).encode())  # no copy: 0.09 s
        return h.hexdigest()[:32]


# -- the forward pass -----------------------------------------------------------------------

class Cache:
    """The KV window of ``slots`` positions a row, per layer, as ``revision.kv``'s mantissas and int32
    exponents.

    Slot ``s`` holds a token at RoPE position ``s``. When a token is to be fed and every slot is
    full, each row keeps slot 0 (its start token, the attention sink) and its newest ``keep``
    tokens (``revision.keep``: half the slots, or seven eighths from int/3 on), moved to slots
    ``1..keep`` and re-rotated there from their unrotated keys, which the cache also keeps. Where
    the window moves depends on the position alone, so a block and a step see the same cache. A
    rotated key is always ``rotate`` of the raw key the cache holds, whether it was just fed or moved.

    The rotated keys are stored transposed, ``(d, slots)`` a row and KV head, and the values
    ``(slots, d)``, both over ``slots`` rounded up to whole 16-slot blocks (zeros after): so the
    attention's two products read them as they lie, as the tiles' plain ``(K, N)`` weights
    (``kernels.attend_tiled``). It also keeps its batch's scratch for attention scores, so that
    batches stepped at once (``codec.Local``'s batches in flight) share no memory.
    """

    NAMES = ("k", "raw", "v", "ke", "re", "ve")  # in the order kernels.layer takes them, before the cache's kv

    def __init__(self, model: IntModel, rows: int, slots: int, device: torch.device, revision: Revision) -> None:
        if not MIN_SLOTS <= slots <= MAX_SLOTS:
            raise ValueError(f"the KV window must have {MIN_SLOTS} to {MAX_SLOTS} slots")
        c = model.config
        n = len(model.layers)
        kv = revision.kv
        self.slots, self.keep, self.used, self.kv = slots, revision.keep(slots), 0, kv
        shape = (n, rows, c.kv_heads, slots, c.head_dim)
        width = -(-slots // kernels.TILE_COLS) * kernels.TILE_COLS
        self.k = torch.zeros((n, rows, c.kv_heads, c.head_dim, width), dtype=kv.dtype, device=device)  # rotated
        self.raw = torch.zeros(shape, dtype=kv.dtype, device=device)  # the same keys before RoPE
        self.v = torch.zeros((n, rows, c.kv_heads, width, c.head_dim), dtype=kv.dtype, device=device)
        self.ke = torch.zeros(shape[:4], dtype=torch.int32, device=device)  # exponents (layers, rows, kv, slots)
        self.re = torch.zeros(shape[:4], dtype=torch.int32, device=device)
        self.ve = torch.zeros(shape[:4], dtype=torch.int32, device=device)
        self._scores = torch.empty(0, dtype=torch.float64, device=device)  # see scores
        self._arrays: list[tuple[np.ndarray, ...]] | None = None

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only the rows at indices ``rows``, in that order (finished chunks leave the block).
        The numpy views go first, so that each array is freed as its copy replaces it: with the
        views held to the end, the cache was in memory twice (a 26-row decode peaked at 1.5 GB, not 1.2)."""
        self._arrays = None
        for name in self.NAMES:
            setattr(self, name, getattr(self, name)[:, rows].contiguous())

    def scores(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A float64 tensor of ``shape`` for a block's attention scores ``(R, G, gT, L)``, in memory
        kept from block to block: a fresh one, tens of MB, costs its page faults at every layer (the
        q.k GEMM into a kept buffer ran twice as fast, measured on an Ice Lake Xeon)."""
        n = math.prod(shape)
        if self._scores.numel() < n:
            self._scores = torch.empty(n, dtype=torch.float64, device=self._scores.device)
        return self._scores[:n].view(shape)

    def arrays(self, i: int) -> tuple:
        """Layer ``i``'s ``NAMES`` as numpy views of a CPU cache, then ``(kv.bits, kv.top)``, for
        ``kernels.layer``: made once, not at every step (210 conversions a step took 3% of a decoder's time)."""
        if self._arrays is None:
            kv = (self.kv.bits, self.kv.top)
            self._arrays = [tuple(getattr(self, name)[j].numpy() for name in self.NAMES) + (kv,)
                            for j in range(len(self.k))]
        return self._arrays[i]


class Runner:
    """An ``IntModel`` placed on a device with a proved-exact GEMM; ``forward`` computes logits.

    On a CPU a layer runs as ``kernels``' numba stages unless ``fused`` is False. A decoder step
    (fewer than ``GEMM_QUERIES`` tokens a row) of at most ``whole_rows`` rows runs a whole layer
    in one call (``kernels.layer``, with the numba GEMM); anything else runs the same stages around
    the chosen GEMM (``_cpu_layer``), a prefill block's attention through the numba GEMM's tiles
    (``kernels.attend_tiled``; int/1's int16 cache through float64 GEMMs, ``_attend_block``). The
    torch code they stand for (``attention``, ``mlp``) is the reference and the CUDA path: the
    same integers.

    ``static`` (the default off a CPU) attends over every slot of the window, the slots a block
    may not see masked, so that a step's shapes never change with its position and no number
    goes back to the host between its kernels (a CUDA graph can capture it); the masked keys
    weigh exactly 0, so the integers are the sliced attention's.
    """

    # A step's layers at slot 400 on an AMD EPYC (Zen 4, VNNI), whole layers against stages around
    # int8 GEMMs, alternating processes, best of 50 steps: 12 rows 23.8 against 32.9 ms, 21 rows 38.9
    # to 39.2 against 43.5 to 44.9, 24 rows 43.0 against 57.6, 32 rows 54.0 to 56.4 against 58.6 to
    # 73.7; 40 rows 67.0 against 88.8 and 91.8 against 87.4; 48 rows 86.9 and 101.5 against 83.6 and
    # 80.7. (The former crossover, 8 rows on an Ice Lake Xeon, was measured before the numba GEMM's
    # tiles tripled its speed.)
    WHOLE_LAYER_ROWS = 32
    GEMM_QUERIES = 8  # a block of this many tokens a row or more attends through GEMMs
    NUMBA_HEAD_ROWS = 8  # logits of at most this many rows come from the numba GEMM (``logits``)

    def __init__(self, model: IntModel, gemm: Gemm, device: torch.device, fused: bool | None = None,
                 static: bool | None = None) -> None:
        self.model, self.gemm, self.device = model, gemm, device
        self.fused = device.type == "cpu" if fused is None else fused
        self.static = device.type != "cpu" if static is None else static
        self.shift_rows = kernels.shift_rows if self.fused else lambda x, s: shift(x, s[..., None])
        self.quarters = kernels.quarters if self.fused else quarters
        t = {}
        for name, v in model.arrays().items():
            if isinstance(v, np.ndarray) and name != "embed.q":  # the embedding is gathered, not multiplied
                t[name] = gemm.weight(v, device) if v.dtype == np.int8 else torch.from_numpy(v).to(device)
        self.t = t
        self.embed_q = torch.from_numpy(model.embed.q).to(device)  # int8 (V, D): rows gathered per token
        # The numba GEMM's packed weights, which a decoder step's whole layers and few rows' logits use:
        # the chosen GEMM's own where it is that one.
        self.packed = ({name: t[name] if gemm.name == "numba" else kernels.pack(v)
                        for name, v in model.arrays().items() if name in t and v.dtype == np.int8}
                       if self.fused else None)
        self.layer_args = [self._layer_args(i) for i in range(len(model.layers))] if self.fused else None
        # A step of more rows than this runs the numba stages around the chosen GEMM: only int8's
        # beats the numba GEMM at a step's rows.
        self.whole_rows = self.WHOLE_LAYER_ROWS if gemm.name == "int8" else math.inf

    def _layer_args(self, i: int) -> tuple:
        """Layer ``i``'s integers as ``kernels.layer`` takes them (after the block and its cache)."""
        c, none, layer = self.model.config, np.zeros(0, np.int64), self.model.layers[i]
        names = ("q", "k", "v", "o", "gate", "up", "down")
        linears = [getattr(layer, n) for n in names]
        norms = [layer.attn_norm, layer.mlp_norm, layer.q_norm, layer.k_norm, layer.post_attn_norm, layer.post_mlp_norm]
        mult, z = self.model.score
        return (tuple(self.packed[f"layers.{i}.{n}.q"] for n in names), tuple(lin.mult for lin in linears),
                np.array([lin.z for lin in linears], np.int64),
                tuple(none if n is None else n.gain for n in norms),
                np.array([(0, 0, 0) if n is None else (n.z, n.eps_m, n.eps_z) for n in norms], np.int64),
                c.heads, self.model.rope[layer.kind], c.sliding_window if layer.kind == "sliding_attention" else 0,
                mult, z - FS, self.model.att_exp, self.model.gate_table,
                (FH, GATE_X, GATE_RANGE, GATE_ONE, ROPE_ONE))

    # A Linear or Norm is named by its prefix in ``IntModel.arrays``: "layers.3.q", "norm", "head".

    def linear(self, m: torch.Tensor, e: torch.Tensor, name: str, z: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(R, K)`` mantissas with ``(R,)`` exponents through a Linear: ``(R, N)`` int64 and exponents."""
        return self.gemm(m, self.t[f"{name}.q"], self.t[f"{name}.mult"]), e - z  # (R, N), |.| < 2**48

    def rmsnorm(self, x: torch.Tensor, e: torch.Tensor, norm: Norm, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """RMSNorm of rows ``(..., n)`` of int64 at exponents ``e (...)``: 14-bit mantissas and exponents."""
        if self.fused:
            return kernels.rmsnorm(x, e, norm.gain, norm.eps_m, norm.eps_z, norm.z)
        n = x.shape[-1]
        h, s = normalize(x, MANT + 1)  # |h| <= 2**15, so the sum of squares stays below 2**41
        eh = e + s  # x ~ h * 2**eh
        ss = (h * h).sum(-1)  # (...,)
        eps = shift(torch.full_like(ss, norm.eps_m), norm.eps_z - 20 + 2 * eh)  # eps in units of 2**(2eh - 20)
        r = torch.div(torch.ones_like(ss) << 50, isqrt((ss << 20) // n + eps).clamp(min=1), rounding_mode="floor")
        y = h * self.t[f"{name}.gain"] * r[..., None]  # |.| < 2**61
        m, s2 = normalize(y)
        return m, s2 - 50 + 10 - norm.z

    def swiglu(self, g: torch.Tensor, eg: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The MLP's ``act(g) * u`` for rows ``(N, I)`` of int64 ``g`` at exponents ``eg (N,)`` and ``u``:
        ``u`` normalised to 14-bit mantissas at exponents ``su``, times ``g``'s gate (a table's, in
        fixed point 2**-16), normalised again. Returns the products' mantissas, their exponents
        ``sp`` and ``su``: the products are at ``2**(sp + su - 16)`` in ``u``'s units."""
        un, su = normalize(u)
        x16 = shift(g, -(eg[..., None] + 16))  # fixed point 2**-16
        idx = (shift(x16, 16 - GATE_X) + (GATE_RANGE << GATE_X)).clamp(0, self.t["gate_table"].shape[0] - 1)
        pm, sp = normalize(shift(x16 * self.t["gate_table"][idx], GATE_ONE) * un)
        return pm, sp, su

    def rotate(self, m: torch.Tensor, kind: str, slots: torch.Tensor, kv: KV) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE of mantissas ``(R, H, T, d)`` at ``slots (T,)``: rotated mantissas of ``kv`` and the exponent change."""
        if self.fused:
            return kernels.rotate(m, slots, self.model.rope[kind], ROPE_ONE, (kv.bits, kv.top))
        cos, sin = self.t[f"rope.{kind}"][:, slots]  # (T, d/2) each, 1 = 2**ROPE_ONE
        half = m.shape[-1] // 2
        a, b = m[..., :half], m[..., half:]
        out = torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)  # |.| < 2**30
        r, s = narrow(out, kv)
        return r, s - ROPE_ONE

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(R, T)`` token ids to the residual stream ``(R, T, D)``, int64 at 2**-FH."""
        q = self.embed_q[tokens].long()  # (R, T, D)
        y = q * self.t["embed.mult"][tokens][..., None]
        return shift(y, self.model.embed.z - FH)

    def attention(self, i: int, layer: Layer, x: torch.Tensor, cache: Cache, start: int) -> torch.Tensor:
        """One layer's attention for a block ``x (R, T, D)`` at slots ``start..start+T-1``; ``(R, T, D)`` int64 at 2**-FH."""
        c, name = self.model.config, f"layers.{i}"
        R, T, D = x.shape
        H, G, d = c.heads, c.kv_heads, c.head_dim
        m, e = self.rmsnorm(x.reshape(R * T, D), torch.full((R * T,), -FH, device=x.device),
                            layer.attn_norm, f"{name}.attn_norm")

        def project(proj: str, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
            y, ey = self.linear(m, e, f"{name}.{proj}", getattr(layer, proj).z)  # (R*T, heads*d)
            y, s = normalize(y.view(R, T, heads, d).transpose(1, 2))  # (R, heads, T, d), per token and head
            return y, s + ey.view(R, 1, T)

        q, eq = project("q", H)  # (R, H, T, d), (R, H, T)
        k, ek = project("k", G)
        v, ev = project("v", G)
        if layer.q_norm is not None:
            q, eq = self.rmsnorm(q, eq, layer.q_norm, f"{name}.q_norm")
            k, ek = self.rmsnorm(k, ek, layer.k_norm, f"{name}.k_norm")
        kv = cache.kv
        if kv.bits < MANT:  # a narrow cache (int/2): keys and values to its mantissas
            (k, sk), (v, sv) = narrow(k, kv), narrow(v, kv)
            ek, ev = ek + sk, ev + sv
        slots = torch.arange(start, start + T, device=x.device)
        qr, sq = self.rotate(q, layer.kind, slots, QUERY)
        kr, sk = self.rotate(k, layer.kind, slots, kv)
        for a, new in ((cache.raw, k.to(kv.dtype)), (cache.re, ek.int()), (cache.ke, (ek + sk).int()),
                       (cache.v, v.to(kv.dtype)), (cache.ve, ev.int())):
            a[i].index_copy_(2, slots, new)  # at the slots tensor: no host number in the step's shapes
        cache.k[i].index_copy_(3, slots, kr.transpose(-1, -2).to(kv.dtype))
        eq = eq + sq

        o, ref = self._attend_block(i, layer, qr, eq, cache, slots)
        o = o.view(R, H, T, d).transpose(1, 2)  # (R, T, H, d) at 2**(ref - 2)
        ref = ref.view(R, H, T).transpose(1, 2)  # (R, T, H)
        top_e = ref.amax(-1, keepdim=True)
        o = self.shift_rows(o, top_e - ref).reshape(R * T, H * d)  # one exponent per token
        om, s = normalize(o)
        y, ey = self.linear(om, s + top_e.view(R * T) - 2, f"{name}.o", layer.o.z)
        return self.residual(y, ey, layer.post_attn_norm, f"{name}.post_attn_norm").view(R, T, D)

    def _attend_block(self, i: int, layer: Layer, qr: torch.Tensor, eq: torch.Tensor, cache: Cache,
                      slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of queries ``(R, H, T, d)`` at ``slots``: ``(R, G, gT, d)`` at 2**(ref - 2), and ``ref``.

        Both products are float64 GEMMs over integers, exact whatever order the GEMM adds in, since
        every partial sum is an integer below 2**53: scores below 2**28 * d, weighted values below
        2**34 * L. The softmax between them is ``_weights``, or its numba kernel on the fused path.
        """
        c = self.model.config
        R, H, T, d = qr.shape
        G, end = c.kv_heads, cache.slots if self.static else int(slots[-1]) + 1  # static: every slot, masked
        # Scores: query head h with KV head h // (H / G), as transformers' repeat_kv has it.
        keys = cache.k[i, ..., :end].double()  # (R, G, d, L)
        qg = qr.reshape(R, G, (H // G) * T, d).double()  # (R, G, gT, d)
        acc = torch.matmul(qg, keys, out=cache.scores((R, G, qg.shape[2], keys.shape[3])))
        eqg = eq.reshape(R, G, (H // G) * T).contiguous()
        qslot = slots.repeat(H // G)  # (gT,)
        window = c.sliding_window if layer.kind == "sliding_attention" else 0
        ke, ve = cache.ke[i, :, :, :end], cache.ve[i, :, :, :end]
        if self.fused:
            mult, z = self.model.score
            total, ref = torch.empty(acc.shape[:3], dtype=torch.int64), torch.empty(acc.shape[:3], dtype=torch.int64)
            kernels.softmax(acc.numpy(), eqg.numpy(), ke.numpy(), ve.numpy(), qslot.numpy(), window, mult, z - FS,
                            self.model.att_exp, total.numpy(), ref.numpy())
            pv = acc  # the numerators, in place
        else:
            pv, total, ref = self._weights(acc.long(), eqg, ke, ve, qslot, window)
            pv = pv.double()
        num = pv @ cache.v[i, :, :, :end].double()  # (R, G, gT, d)
        return self.quarters(num, total), ref

    def _weights(self, acc: torch.Tensor, eq: torch.Tensor, ke: torch.Tensor, ve: torch.Tensor, qslot: torch.Tensor,
                 window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Softmax numerators of scores ``acc (R, G, gT, L)`` (queries at exponents ``eq (R, G, gT)``
        and slots ``qslot (gT,)``, keys at ``ke (R, G, L)``), each shifted to its query's value
        exponent ``ref``, the largest among the ``ve (R, G, L)`` it sees: ``pv``, their ``total``
        and ``ref``. A query sees the keys up to its slot, and within ``window`` (0: all) of it."""
        mult, z = self.model.score
        scores = shift(acc * mult, z - FS - eq[..., None] - ke[:, :, None].long())  # 2**-FS nats
        kslot = torch.arange(acc.shape[-1], device=acc.device)
        visible = kslot[None, :] <= qslot[:, None]
        if window:
            visible &= kslot[None, :] > qslot[:, None] - window
        top = torch.where(visible, scores, torch.iinfo(torch.int64).min).amax(-1, keepdim=True)
        table = self.t["att_exp"]
        p = torch.where(visible, table[(top - scores).clamp(0, table.shape[0] - 1)], 0)  # (R, G, gT, L) <= 2**20
        ve = ve[:, :, None].long()  # (R, G, 1, L)
        ref = torch.where(visible, ve, -(1 << 30)).amax(-1)  # (R, G, gT)
        return shift(p, ref[..., None] - ve), p.sum(-1), ref

    def residual(self, y: torch.Tensor, e: torch.Tensor, norm: Norm | None, name: str) -> torch.Tensor:
        """A branch's output rows (int64 at exponents ``e``) as a residual update at 2**-FH (Gemma: normed first)."""
        if norm is not None:
            y, e = self.rmsnorm(y, e, norm, name)
        return self.shift_rows(y, -(e + FH))

    def mlp(self, i: int, layer: Layer, x: torch.Tensor) -> torch.Tensor:
        """One layer's MLP for ``x (R, T, D)``: ``(R, T, D)`` int64 at 2**-FH."""
        name, (R, T, D) = f"layers.{i}", x.shape
        m, e = self.rmsnorm(x.reshape(R * T, D), torch.full((R * T,), -FH, device=x.device),
                            layer.mlp_norm, f"{name}.mlp_norm")
        g, eg = self.linear(m, e, f"{name}.gate", layer.gate.z)  # (R*T, I)
        u, eu = self.linear(m, e, f"{name}.up", layer.up.z)
        pm, sp, su = self.swiglu(g, eg, u)
        y, ey = self.linear(pm, sp + su + eu - 16, f"{name}.down", layer.down.z)
        return self.residual(y, ey, layer.post_mlp_norm, f"{name}.post_mlp_norm").view(R, T, D)

    def _shift_window(self, cache: Cache) -> None:
        keep, slots = cache.keep, cache.slots
        moved = slice(slots - keep, slots)
        for i, layer in enumerate(self.model.layers):
            raw, re = cache.raw[i, :, :, moved].long(), cache.re[i, :, :, moved].long()
            kr, sk = self.rotate(raw, layer.kind, torch.arange(1, keep + 1, device=raw.device), cache.kv)
            for a in (cache.raw, cache.re, cache.v, cache.ve):
                a[i, :, :, 1 : keep + 1] = a[i, :, :, moved].clone()
            cache.k[i, ..., 1 : keep + 1] = kr.transpose(-1, -2).to(cache.kv.dtype)
            cache.ke[i, :, :, 1 : keep + 1] = (re + sk).int()
        cache.used = keep + 1

    def _cpu_layer(self, i: int, layer: Layer, x: np.ndarray, rows: int, cache: Cache) -> None:
        """One layer on ``x (R*T, D)``, in place, by ``kernels.layer``'s numba stages around the chosen
        GEMM: a step of many rows costs 12 calls a layer, not torch's 60 (19 rows at slot 400:
        101-134 ms against 113-163 ms, alternating step by step, on an Ice Lake Xeon); a prefill
        block attends through GEMMs (``kernels.attend_tiled``, or ``_attend_block`` over int/1's int16
        cache) between ``_qkv`` and ``_merge_heads``."""
        zs, gains, params, heads, rope, window, score_mult, score_z, att_exp, gate_table, consts = self.layer_args[i][2:]
        fh, gate_x, gate_range, gate_one, rope_one = consts
        T, start = x.shape[0] // rows, cache.used

        def mm(m: np.ndarray, proj: str) -> np.ndarray:
            name = f"layers.{i}.{proj}"
            return self.gemm(torch.from_numpy(m), self.t[f"{name}.q"], self.t[f"{name}.mult"]).numpy()

        m, e = kernels._rmsnorm(x, np.full(x.shape[0], -fh, np.int64), gains[0], params[0])
        y = mm(m, "q"), mm(m, "k"), mm(m, "v")
        if T < self.GEMM_QUERIES:
            om, eo = kernels._attn_mid(*y, e, zs, rows, start, *cache.arrays(i), gains, params, heads, rope, window,
                                       score_mult, score_z, att_exp, rope_one)
        else:
            qr, eq = kernels._qkv(*y, e, zs, rows, start, *cache.arrays(i), gains, params, heads, rope, rope_one)
            if cache.kv.dtype == torch.int8:
                o, ref = np.empty(qr.shape, np.int64), np.empty(eq.shape, np.int64)
                k, _, v, ke, _, ve, _ = cache.arrays(i)
                kernels.attend_tiled(qr, eq, k, ke, v, ve, np.arange(start, start + T), window, score_mult, score_z,
                                     att_exp, o, ref)
            else:  # int/1's int16 cache
                o, ref = self._attend_block(i, layer, torch.from_numpy(qr), torch.from_numpy(eq), cache,
                                            torch.arange(start, start + T))
                o, ref = o.view(qr.shape).numpy(), ref.view(eq.shape).numpy()
            om, eo = kernels._merge_heads(o, ref)
        m, e = kernels._mlp_in(x, mm(om, "o"), eo - zs[3], gains, params, fh)
        pm, sp, su = kernels._swiglu(mm(m, "gate"), e - zs[4], mm(m, "up"), gate_table, gate_x, gate_range, gate_one)
        kernels._residual(x, mm(pm, "down"), sp + su + e - zs[5] - 16 - zs[6], gains[5], params[5], fh)

    def forward(self, tokens: torch.Tensor, cache: Cache) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed ``tokens (R, T)`` after what ``cache`` holds: the final norm's ``(R, T, D)`` mantissas
        and ``(R, T)`` exponents, for ``logits``. Blocks are cut where the window moves."""
        outs = []
        pos = 0
        while pos < tokens.shape[1]:
            if cache.used == cache.slots:
                self._shift_window(cache)
            n = min(tokens.shape[1] - pos, cache.slots - cache.used)
            x = self.embed(tokens[:, pos : pos + n])  # (R, T, D)
            R, T, D = x.shape
            whole = self.fused and T < self.GEMM_QUERIES and R * T <= self.whole_rows
            rows = x.view(R * T, D).numpy() if self.fused else None
            for i, layer in enumerate(self.model.layers):
                if whole:  # in place, on x's memory
                    kernels.layer(rows, R, cache.used, *cache.arrays(i), *self.layer_args[i])
                elif self.fused:
                    self._cpu_layer(i, layer, rows, R, cache)
                else:
                    x = x + self.attention(i, layer, x, cache, cache.used)
                    x = x + self.mlp(i, layer, x)
            m, e = self.rmsnorm(x.reshape(R * T, D), torch.full((R * T,), -FH, device=x.device),
                                self.model.norm, "norm")
            outs.append((m.view(R, T, D), e.view(R, T)))
            cache.used += n
            pos += n
        return torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)

    def logits(self, m: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Final-norm rows ``(N, D)`` with exponents ``(N,)`` to ``(N, V)`` int64 logits at 2**-FS nats.
        A decoder step's few rows go through the numba GEMM: on an AMD EPYC (Zen 4, VNNI), best of 7,
        4 rows 1.4-1.8 ms against int8 ``_int_mm``'s 3.3-3.8 ms (padded to 17 rows), 8 rows 2.9-3.0
        against 3.8-3.9, 12 rows even (4.2-4.4), 21 rows 8.0-8.4 against 5.8-6.8."""
        head = self.model.head
        if self.fused and m.shape[0] <= self.NUMBA_HEAD_ROWS:
            y, ey = kernels.matmul(m, self.packed["head.q"], head.mult), e - head.z
        else:
            y, ey = self.linear(m, e, "head", head.z)
        return self.shift_rows(y, -(ey + FS))
