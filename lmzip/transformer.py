"""The model's forward pass, one lockstep token a step, over a preallocated KV cache.

The engine advances every row of a batch by one token a step, so all rows always sit at the
same position. That makes incremental inference simple and cheap:

- the KV cache is allocated once for the whole batch, ``(rows, kv heads, slots, head dim)`` a
  layer, and each step writes one slot: no tensor grows as the context lengthens;
- one ``(cos, sin)`` pair a step serves every row, and attention needs no mask: a row attends
  to the first ``t + 1`` slots (the last ``sliding_window`` of them in a sliding layer);
- a stream longer than the cache runs in a window. When the cache is full, every row keeps its
  first slot (the start token, which the models use as an attention sink) and its newest
  ``slots // 2`` slots, moved down to positions ``1..slots // 2``; their keys are rotated back
  by the distance moved, so each key sits at its new position as RoPE would have put it. Every
  token is then predicted from between ``slots // 2`` and ``slots`` tokens of context, and no
  step pays for more. (llama.cpp's "context shift" works the same way.)

The arithmetic is the model's own: the projections, norms, MLPs and rotary tables are the
transformers modules themselves. Only the cache and the wiring around attention are written
here. Supported families: Llama (also Mistral without a sliding window, and Qwen2 with its
attention bias) and Gemma 3.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import ModelError

SUPPORTED = ("llama", "mistral", "qwen2", "gemma3_text")


def check_supported(module: torch.nn.Module) -> None:
    """Raise ModelError unless ``Stepper`` can run this architecture exactly."""
    config = module.config
    if config.model_type not in SUPPORTED:
        raise ModelError(f"architecture '{config.model_type}' is not supported (lmzip runs: {', '.join(SUPPORTED)})")
    if getattr(config, "attn_logit_softcapping", None) is not None:
        raise ModelError(f"architecture '{config.model_type}' with attention logit soft-capping is not supported")
    if config.model_type == "mistral" and getattr(config, "sliding_window", None):
        raise ModelError("Mistral with a sliding window is not supported")


# oneDNN's GEMM, the kernel torch's own compiler uses on CPU, where this torch build has it.
ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)`` without a bias, through oneDNN (requires ``ONEDNN``)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


def _output_head(module: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The projection to the vocabulary, the largest matmul of a step (SmolLM2: 576 x 49152).

    On CPU in float32, oneDNN runs it about twice as fast as MKL's GEMM, which ``F.linear`` uses,
    at the batch sizes lmzip steps with (rows of 48 to 128 on this project's 2-core CPU). Both
    are deterministic; the choice depends only on the device, dtype and the torch build, which
    every file records, so the encoder and the decoder always make the same one.
    """
    head = module.lm_head
    if (type(head) is torch.nn.Linear and head.bias is None and head.weight.device.type == "cpu"
            and head.weight.dtype == torch.float32 and ONEDNN):
        return lambda x: onednn_linear(x, head.weight)
    return head


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class Stepper:
    """Feed ``rows`` streams one token each per call; return the next-token logits.

    The cache holds ``slots`` tokens a row; longer streams run in the window described above,
    which needs at least 2 slots.
    """

    def __init__(self, module: torch.nn.Module, rows: int, slots: int) -> None:
        check_supported(module)
        self.module = module
        self.config = config = module.config
        self.rows = rows
        self.t = 0
        self.layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
        self.sandwich = hasattr(module.model.layers[0], "pre_feedforward_layernorm")  # Gemma 3's four norms
        self.head = _output_head(module)
        attn = module.model.layers[0].self_attn
        weight = module.model.embed_tokens.weight  # the activations' dtype, also under quantised linear layers
        self.head_dim = attn.head_dim
        self.kv_heads = attn.k_proj.out_features // self.head_dim
        self.keep = slots // 2
        shape = (config.num_hidden_layers, rows, self.kv_heads, slots, self.head_dim)
        # Zeroed, not empty: no kernel may ever see memory that differs between encoder and decoder.
        self.k = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.v = torch.zeros(shape, dtype=weight.dtype, device=weight.device)

    def _rope(self, h: torch.Tensor, t: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        position = torch.full((1, 1), t, dtype=torch.long, device=h.device)
        rotary = self.module.model.rotary_emb
        if self.config.model_type == "gemma3_text":
            return {kind: rotary(h, position, kind) for kind in set(self.layer_types)}
        return {"full_attention": rotary(h, position)}

    def _attention(self, i: int, layer: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor) -> torch.Tensor:
        a, t, d = layer.self_attn, self.t, self.head_dim
        q = a.q_proj(x).view(self.rows, -1, 1, d)
        k = a.k_proj(x).view(self.rows, self.kv_heads, 1, d)
        v = a.v_proj(x).view(self.rows, self.kv_heads, 1, d)
        if hasattr(a, "q_norm"):
            q, k = a.q_norm(q), a.k_norm(k)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        self.k[i, :, :, t : t + 1] = k
        self.v[i, :, :, t : t + 1] = v
        first = max(0, t + 1 - a.sliding_window) if getattr(a, "sliding_window", None) else 0
        # Query head h attends with KV head h // group, as transformers' repeat_kv has it. Plain
        # matmuls over the cache slice, softmax in float32 as the models' eager attention does:
        # no attention backend is chosen at run time. (Engine /1, fused SDPA over an uninitialised
        # cache, did not replay on CUDA: benchmarks/gpu-h200/engine-1/.)
        q = q.view(self.rows, self.kv_heads, -1, d)
        scores = q @ self.k[i, :, :, first : t + 1].transpose(-1, -2) * a.scaling
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        return a.o_proj((weights @ self.v[i, :, :, first : t + 1]).reshape(self.rows, -1))

    def _shift(self, h: torch.Tensor) -> None:
        """Keep slot 0 and the newest ``keep`` slots, moved to slots ``1..keep``; keys rotated back."""
        slots, keep = self.k.shape[3], self.keep
        moved = slots - keep - 1
        back = self._rope(h, moved)
        unit = self._rope(h, 0)  # cos(0) = the rotary's output scale, divided out below
        for i, kind in enumerate(self.layer_types):
            (cos, sin), (one, _) = back[kind], unit[kind]
            cos, sin = (cos[0] / one[0]).to(self.k.dtype), (sin[0] / one[0]).to(self.k.dtype)
            self.k[i, :, :, 1 : keep + 1] = _rotate(self.k[i, :, :, slots - keep :], cos, -sin)
            self.v[i, :, :, 1 : keep + 1] = self.v[i, :, :, slots - keep :].clone()  # the ranges may overlap
        self.t = keep + 1

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``(rows,)`` at the current position; returns ``(rows, vocab)`` logits for the next."""
        model = self.module.model
        h = model.embed_tokens(tokens)
        if self.t == self.k.shape[3]:
            self._shift(h)
        rope = self._rope(h, self.t)
        for i, layer in enumerate(model.layers):
            cos, sin = rope[self.layer_types[i]]
            y = self._attention(i, layer, layer.input_layernorm(h), cos[0], sin[0])
            if self.sandwich:
                h = h + layer.post_attention_layernorm(y)
                h = h + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h)))
            else:
                h = h + y
                h = h + layer.mlp(layer.post_attention_layernorm(h))
        logits = self.head(model.norm(h))
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        self.t += 1
        return logits
