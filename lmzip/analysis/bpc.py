"""Theoretical bits per character, computed exactly as Huang et al. (2024) computed it.

The paper's method (hkust-nlp/llm-compression-intelligence, ``code/evaluation/``):

1. each document is encoded with ``tokenizer.encode()``, special tokens added as the tokenizer
   adds them, and the documents are concatenated into one token stream;
2. windows of ``window + 1`` tokens start every ``stride`` tokens, as many as fit whole:
   ``floor((N - window - 1) / stride) + 1`` of them;
3. the first window scores all its ``window`` targets; each later one scores only the targets
   that the windows before it did not reach (its last ``stride``); tokens after the last
   window are not scored;
4. BPC = summed cross-entropy in nats / (characters x ln 2), characters being Python
   ``len(str)`` of the documents.

``method="all"`` scores every token after the first instead: it adds one last window that
ends at the stream's end, so the tail the paper drops is scored too (with full context). On
long corpora the two agree closely; on short ones ``all`` covers up to ``stride - 1`` more
tokens, and it accepts streams shorter than one window.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..models import LanguageModel

PAPER_WINDOW = 1900
PAPER_STRIDE = 512
METHODS = ("paper", "all")


@dataclass
class BpcResult:
    """One row of ``lmzip bpc`` output: the format ``lmzip correlate`` reads."""

    model: str
    corpus: str
    area: str
    characters: int
    bytes: int
    tokens: int
    scored_tokens: int
    bits: float
    bpc: float
    bits_per_byte: float
    method: str
    window: int
    stride: int

    def as_dict(self) -> dict:
        return asdict(self)


def windows(n_tokens: int, window: int = PAPER_WINDOW, stride: int = PAPER_STRIDE,
            method: str = "paper") -> list[tuple[int, int, int]]:
    """``(begin, end, first_target)`` per window: the window feeds tokens ``[begin, end - 1)`` and
    scores the targets at stream positions ``[first_target, end)``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    if window < 1 or stride < 1 or stride > window:
        raise ValueError("need 1 <= stride <= window")
    block = window + 1
    count = (n_tokens - block) // stride + 1 if n_tokens >= block else 0
    spans = [(k * stride, k * stride + block) for k in range(count)]
    if method == "all" and n_tokens >= 2 and (not spans or spans[-1][1] < n_tokens):
        spans.append((max(0, n_tokens - block), n_tokens))
    out, reached = [], 1
    for begin, end in spans:
        out.append((begin, end, max(reached, begin + 1)))
        reached = end
    return out


@torch.inference_mode()
def window_nats(lm: LanguageModel, stream: torch.Tensor, batch: list[tuple[int, int, int]]) -> float:
    """Summed cross-entropy (nats) of the scored targets of equally long windows, in one forward pass."""
    ids = torch.stack([stream[b:e] for b, e, _ in batch]).to(lm.device)
    keep = max(e - t for _, e, t in batch)  # scored targets are always a window's last ones
    logits = lm.module(input_ids=ids[:, :-1], logits_to_keep=keep).logits.float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, -keep:, None])[..., 0]
    total = 0.0
    for row, (_, e, t) in enumerate(batch):
        total -= float(logp[row, keep - (e - t):].double().sum())
    return total


def batches(spans: list[tuple[int, int, int]], batch_size: int) -> list[list[tuple[int, int, int]]]:
    """The windows in forward passes of at most ``batch_size``: windows of one length batch
    together (only 'all' adds a shorter one, at the end)."""
    groups: dict[int, list] = {}
    for span in spans:
        groups.setdefault(span[1] - span[0], []).append(span)
    return [group[i : i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]


Scorer = Callable[[torch.Tensor, list], Iterator[float]]  # (stream ids, batches) -> each batch's nats, in order


def stream_bits(lm: LanguageModel, stream: list[int], window: int = PAPER_WINDOW, stride: int = PAPER_STRIDE,
                method: str = "paper", batch_size: int = 1,
                progress: Callable[[int, int], None] | None = None, scorer: Scorer | None = None) -> tuple[float, int]:
    """Cross-entropy in bits of a token stream under the windowing rule, and how many targets it
    scored; ``scorer`` scores the batches elsewhere (``cluster.Ray.scorer``), else ``lm`` here."""
    spans = windows(len(stream), window, stride, method)
    if not spans:
        raise InputError(f"{len(stream)} tokens are fewer than one window of {window + 1}; "
                         "use --method all or a smaller --window")
    ids = torch.tensor(stream, dtype=torch.long)
    plan = batches(spans, batch_size)
    scores = scorer(ids, plan) if scorer else (window_nats(lm, ids, batch) for batch in plan)
    nats, scored = 0.0, 0
    for batch, batch_nats in zip(plan, scores):  # summed in the plan's order, wherever each batch ran
        nats += batch_nats
        scored += sum(e - t for _, e, t in batch)
        if progress:
            progress(len(batch), len(spans))
    return nats / math.log(2), scored


def documents(path: str) -> list[str]:
    """A file's documents: each line's ``content`` for JSONL (the paper's corpora), else the whole file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    if p.suffix == ".jsonl":
        try:
            return [json.loads(line)["content"] for line in raw.decode("utf-8").splitlines() if line.strip()]
        except (ValueError, KeyError) as exc:
            raise InputError(f"{path}: not JSONL with a 'content' field ({exc})") from None
    try:
        return [raw.decode("utf-8")]
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; BPC is defined on characters") from None


def measure(lm: LanguageModel, path: str, area: str | None = None, window: int = PAPER_WINDOW,
            stride: int = PAPER_STRIDE, method: str = "paper", batch_size: int = 1,
            progress: Callable[[int, int], None] | None = None, scorer: Scorer | None = None) -> BpcResult:
    """BPC of one corpus file (its documents concatenated) under ``method``."""
    docs = documents(path)
    stream: list[int] = []
    for doc in docs:
        stream.extend(lm.tokenizer.encode(doc))
    bits, scored = stream_bits(lm, stream, window, stride, method, batch_size, progress, scorer)
    chars = sum(len(d) for d in docs)
    size = sum(len(d.encode("utf-8")) for d in docs)
    return BpcResult(model=lm.name, corpus=Path(path).name, area=area or Path(path).parent.name, characters=chars,
                     bytes=size, tokens=len(stream), scored_tokens=scored, bits=bits, bpc=bits / max(chars, 1),
                     bits_per_byte=bits / max(size, 1), method=method, window=window, stride=stride)

