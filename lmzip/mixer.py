"""An online mixer between the model's integer logits and the coder: what a chunk has already
said, remembered exactly, corrects what a small model forgets.

Two cheap models read each row's own tokens so far; each predicts at most one next token:

- a **match model**: the token that followed the last occurrence of the current context (found
  through a hash of the last ``MIN_MATCH`` tokens and verified token by token), with the match's
  length;
- an **order-2 model**: the token that last followed the previous two tokens, with a count of how
  often in a row it was right.

Before them (revision mix/2) an **adaptive bias** moves every logit: each row learns a bias for
each token of the vocabulary, online, a step down the log loss's gradient after every token (up
for the token that came, down for the likeliest few in proportion to their probability), as
Nacrith's adaptive bias head does. It learns the document's own vocabulary (names, identifiers,
markup) that a 135M model under-predicts. On the first 8000 bytes of each corpus file, mix/2
spends 1.56% fewer bits than ``--mixer off`` (``benchmarks/mixer.md``, engine int/3); mix/1 had
spent 0.58% fewer in the same bench's run before mix/2 (engine int/1). Its gain grows with a
chunk's history: on hott_logic.tex, 1.5% of the model's bits in chunks of 2048 tokens, 5.2% in
chunks of 8192 (``benchmarks/context-chunks.md``).

Each candidate token ``c`` then gets a logistic mix, in the paq sense, of the model's log-odds
for ``c`` and the learned log-odds that each small model is right in its present state. In
revision mix/3 a small model's input counts only for the token it proposes (0 for the other
candidate), and every candidate of a row shares one weight vector; mix/1 and mix/2 gave both
inputs to both candidates and chose one of 135 weight vectors by the state (match length bucket,
order-2 count, which model proposed ``c``), each of which saw too few of a chunk's tokens to
learn. On the same logits of the first 16,000 bytes of every corpus file, mix/3 spent 2.61%
fewer bits than the model alone and mix/2 2.14%, and every file gained
(``benchmarks/mixer-replay.md``; ``benchmarks/mixer.md`` compresses the files with both). More
orders (1, 3 and 4, each proposing its own candidate), more weight sets, and an APM stage after
the mix were tried on the same model's logits and lost bits or gained none. The mix is the
log-odds the coder should give ``c``; adding the difference to ``c``'s logit gives it exactly
those odds, with every other token scaled alike. So the table stays the engine's
(``quantize.int_intervals``), only a few logits move, and the cost a token is one pass over the
row (its max and sum) whatever the vocabulary; the adaptive bias adds a few more (the bias, the
biased sum, the likeliest). After each token the bias, the weights, the models' hit rates and
the models themselves learn from it.

Everything is integer arithmetic on integer state, so the decoder reproduces every bias on any
machine; the state is per row and starts afresh with each chunk, which stays decodable alone.
Log-odds are in ``2**-FS`` nats, as the logits are; probabilities in ``2**-16``; weights in
``2**-16``. Files record the revision (``REVISIONS``), and each computes its own tables.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numba
import numpy as np
import torch

from .errors import ReplayError
from .intmodel import FS
from .quantize import _int_row, int_probabilities

REVISIONS = ("mix/1", "mix/2", "mix/3")  # every revision listed here still decodes; new files get the last
REVISION = REVISIONS[-1]
TABLE_BITS = 16  # slots of each row's hash tables
MIN_MATCH = 3  # tokens of context a match starts from
MAX_VERIFY = 32  # a found match is verified (and its length measured) this far back
CLAMP = 8 << FS  # log-odds are clamped to +-8 nats
ONE = 1 << 16  # probabilities and weights
RATE = 5  # hit rates adapt by 2**-RATE a token
LEARN = 16  # weights move by err * input * 2**-LEARN (a learning rate of 2**(FS - LEARN))
INPUTS = 4  # the model's log-odds, the match model's, the order-2 model's, a constant 1 nat
MATCH_BUCKETS = 9  # 0: no match, then lengths 3, 4, 5-6, 7-9, 10-14, 15-22, 23-31, 32 and more
ORDER2_STATES = 5  # 0: no prediction, then counts 0..3
ROLES = 3  # the match's candidate with the order-2 model agreeing (or silent), disagreeing; the order-2 one's
SETS = MATCH_BUCKETS * ORDER2_STATES * ROLES
INITIAL_WEIGHTS = (ONE, ONE // 4, ONE // 4, 0)
MAX_WEIGHT = 16 * ONE
MAX_LENGTH = 1 << 16
# The adaptive bias (mix/2): each row learns a bias for every token's logit online, by a step down
# the log loss's gradient on the model's tables as biased: +BIAS_RATE for the token that came, and
# -BIAS_RATE * p for each of the likeliest few (``_adapt_row``), whose p is most of the rest.
BIAS_RATE = 1 << (FS - 2)  # a quarter of a nat
BIAS_TOP = 32
BIAS_SPAN = 5 << FS
BIAS_CLAMP = 8 << FS
_NEAR = 256  # tokens within BIAS_SPAN that _adapt_row gathers in its sum's pass
_BOUNDS = np.array([3, 4, 5, 7, 10, 15, 23, 32], dtype=np.int64)  # first length of buckets 1..8
_LOG_BITS = 12
_SQUASH_STEP = 6  # the squash table's grid: 2**-6 nats


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ln(1 + i / 4096)`` and ``e * ln 2`` in ``2**-FS`` nats, and ``squash`` on its grid, in ``2**-16``."""
    ln_mant = np.rint(np.log1p(np.arange(1 << _LOG_BITS) / 2.0**_LOG_BITS) * 2.0**FS).astype(np.int64)
    ln_pow = np.rint(np.arange(64) * np.log(2.0) * 2.0**FS).astype(np.int64)
    s = (np.arange((2 * CLAMP >> _SQUASH_STEP) + 2) * (1 << _SQUASH_STEP) - CLAMP) / 2.0**FS
    squash = np.clip(np.rint(ONE / (1.0 + np.exp(-s))), 1, ONE - 1).astype(np.int64)
    return ln_mant, ln_pow, squash


LN_MANT, LN_POW, SQUASH = _tables()
TABLES_SHA256 = "0f5215bdc1f87efb"  # of the three tables, as every machine must compute them


@functools.cache
def _check_tables() -> None:
    """Once a process: the tables come from the float64 ``log1p`` and ``exp`` of this machine's
    libm, rounded; a libm that rounds one of them otherwise would code other files, so it is refused."""
    digest = hashlib.sha256(b"".join(t.astype("<i8").tobytes() for t in (LN_MANT, LN_POW, SQUASH)))
    if digest.hexdigest()[: len(TABLES_SHA256)] != TABLES_SHA256:
        raise ReplayError("this machine's libm computes the mixer's tables otherwise: it can neither write nor "
                          "read files made with the mixer (--mixer off writes without it)")


@dataclass
class State:
    """The mixer's state for ``rows`` chunks of at most ``length`` tokens, fresh: as each chunk starts."""

    hist: np.ndarray  # (R, L) int32: each row's tokens so far
    match: np.ndarray  # (R, 2**TABLE_BITS) int32: context hash -> the position after it (0: none)
    order2: np.ndarray  # (R, 2**TABLE_BITS) int32: context hash -> (token + 1) << 2 | count (0: none)
    where: np.ndarray  # (R, 3) int64: tokens so far, the match's pointer, its length (0: no match)
    hits: np.ndarray  # (R, 2, 9) int64: P(right) of the match model by bucket, of the order-2 one by state
    weights: np.ndarray  # (R, SETS, INPUTS) int64; mix/3: (R, 1, INPUTS)
    proposal: np.ndarray  # (R, 4) int64: the match's token (-1: none), its bucket, the order-2 token, state
    pending: np.ndarray  # (R, 2, 3 + INPUTS) int64: each candidate's token (-1: none), set, p, inputs
    bias: np.ndarray  # (R, V) int32: each token's learned bias, 2**-FS nats ((R, 0) without the stage)
    likely: np.ndarray  # (R, 2 + 2 * BIAS_TOP) int64: the biased table's sum(P), count, then tokens and P
    gated: bool  # mix/3: each small model's input counts only for its own candidate; one weight vector

    @classmethod
    def fresh(cls, rows: int, length: int, vocab: int, revision: str = REVISION) -> State:
        """The state of ``revision``: mix/2 and mix/3 keep a bias for each token of the ``vocab``, mix/1 none."""
        _check_tables()
        size, gated = 1 << TABLE_BITS, revision == "mix/3"
        weights = np.empty((rows, 1 if gated else SETS, INPUTS), dtype=np.int64)
        weights[:] = INITIAL_WEIGHTS
        return cls(np.zeros((rows, max(length, 1)), np.int32), np.zeros((rows, size), np.int32),
                   np.zeros((rows, size), np.int32), np.zeros((rows, 3), np.int64),
                   np.full((rows, 2, 9), ONE // 2, dtype=np.int64), weights,
                   np.zeros((rows, 4), np.int64), np.zeros((rows, 2, 3 + INPUTS), np.int64),
                   np.zeros((rows, 0 if revision == "mix/1" else vocab), np.int32),
                   np.zeros((rows, 2 + 2 * BIAS_TOP), np.int64), gated)

    def arrays(self) -> tuple:
        """What every kernel below takes after its own arguments: the arrays, the tables, ``gated``."""
        return (self.hist, self.match, self.order2, self.where, self.hits, self.weights, self.proposal,
                self.pending, LN_MANT, LN_POW, SQUASH, self.gated)


# -- integer helpers ---------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def ilog(x, ln_mant, ln_pow):
    """``ln(x)`` in ``2**-FS`` nats for an integer ``1 <= x < 2**50``."""
    e = 0
    while (x >> e) > 1:
        e += 1
    return ln_pow[e] + ln_mant[((x << _LOG_BITS) >> e) & ((1 << _LOG_BITS) - 1)]


@numba.njit(cache=True, nogil=True)
def log_odds(part, whole, ln_mant, ln_pow):
    """``ln(part / (whole - part))`` clamped to ``+-CLAMP``, for integers ``0 <= part <= whole``."""
    if part <= 0:
        return -CLAMP
    if part >= whole:
        return CLAMP
    return min(max(ilog(part, ln_mant, ln_pow) - ilog(whole - part, ln_mant, ln_pow), -CLAMP), CLAMP)


@numba.njit(cache=True, nogil=True)
def squash(s, table):
    """``1 / (1 + exp(-s))`` in ``2**-16`` for log-odds ``s`` within ``+-CLAMP``: the table, interpolated."""
    i, frac = (s + CLAMP) >> _SQUASH_STEP, (s + CLAMP) & ((1 << _SQUASH_STEP) - 1)
    return table[i] + (((table[i + 1] - table[i]) * frac) >> _SQUASH_STEP)




@numba.njit(cache=True, nogil=True)
def context_slot(hist, n, order):
    """The hash-table slot of the ``order`` tokens before position ``n`` of ``hist``."""
    h = 0x5BD1E995 + order
    for k in range(n - order, n):
        h = ((h ^ hist[k]) * 0x2545F491) & 0xFFFFFFFF
    return h >> (32 - TABLE_BITS)


@numba.njit(cache=True, nogil=True)
def bucket(length):
    """The match-length bucket, 1..8, of a match of ``length >= MIN_MATCH`` tokens."""
    b = 0
    while b < _BOUNDS.shape[0] and length >= _BOUNDS[b]:
        b += 1
    return b


# -- one row, one token ------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _propose(r, hist, match, order2, where, hits, weights, proposal, pending, ln_mant, ln_pow, sq, gated):
    """The small models' candidates for row ``r``'s next token, with their sets and inputs 1..3."""
    n, ptr, length = where[r, 0], where[r, 1], where[r, 2]
    cm, mb, co, ob = -1, 0, -1, 0
    if length > 0:
        cm, mb = np.int64(hist[r, ptr]), bucket(length)
    if n >= 2:
        v = np.int64(order2[r, context_slot(hist[r], n, 2)])
        if v:
            co, ob = (v >> 2) - 1, (v & 3) + 1
    proposal[r, 0], proposal[r, 1], proposal[r, 2], proposal[r, 3] = cm, mb, co, ob
    xm = log_odds(hits[r, 0, mb], ONE, ln_mant, ln_pow) if cm >= 0 else 0
    xo = log_odds(hits[r, 1, ob], ONE, ln_mant, ln_pow) if co >= 0 else 0
    base = (mb * ORDER2_STATES + ob) * ROLES
    pending[r, 0, 0], pending[r, 1, 0] = -1, -1
    k = 0
    if cm >= 0:  # gated (mix/3): a model's input only for its own token, and one weight set
        s = 0 if gated else base + (0 if co < 0 or co == cm else 1)
        _candidate(pending[r, 0], cm, s, xm, xo if co == cm or not gated else 0)
        k = 1
    if co >= 0 and co != cm:
        _candidate(pending[r, k], co, 0 if gated else base + 2, 0 if gated else xm, xo)


@numba.njit(cache=True, nogil=True)
def _candidate(p, token, s, xm, xo):
    p[0], p[1], p[4], p[5], p[6] = token, s, xm, xo, 1 << FS


@numba.njit(cache=True, nogil=True)
def _bias(r, whole, pc, weights, pending, ln_mant, ln_pow, sq, out):
    """Row ``r``'s candidates' mixed log-odds, from the model's ``sum(P)`` and the candidates' ``P``
    (``pc``): into ``out`` (2,), each the amount its logit moves by (0: no candidate)."""
    for k in range(2):
        p = pending[r, k]
        out[k] = 0
        if p[0] < 0:
            continue
        p[3] = log_odds(pc[k], whole, ln_mant, ln_pow)
        dot = 0
        for i in range(INPUTS):
            dot += weights[r, p[1], i] * p[3 + i]
        s = min(max(dot >> 16, -CLAMP), CLAMP)
        p[2] = squash(s, sq)
        out[k] = s - p[3]


@numba.njit(cache=True, nogil=True)
def _learn(r, y, weights, pending):
    """Row ``r``'s next token was ``y``: the weights of its candidates' sets learn it."""
    for k in range(2):
        p = pending[r, k]
        if p[0] < 0:
            continue
        err = ((1 if y == p[0] else 0) << 16) - p[2]
        for i in range(INPUTS):
            w = weights[r, p[1], i] + ((err * p[3 + i]) >> LEARN)
            weights[r, p[1], i] = min(max(w, -MAX_WEIGHT), MAX_WEIGHT)


@numba.njit(cache=True, nogil=True)
def _advance(r, y, hist, match, order2, where, hits, proposal):
    """Row ``r``'s next token was ``y``: the small models and their hit rates learn it. Nothing here
    reads the model's tables, so the encoder runs it ahead of them (``plan``)."""
    cm, mb, co, ob = proposal[r, 0], proposal[r, 1], proposal[r, 2], proposal[r, 3]
    if cm >= 0:
        hits[r, 0, mb] += (((1 if y == cm else 0) << 16) - hits[r, 0, mb]) >> RATE
    if co >= 0:
        hits[r, 1, ob] += (((1 if y == co else 0) << 16) - hits[r, 1, ob]) >> RATE
    n, ptr, length = where[r, 0], where[r, 1], where[r, 2]
    hist[r, n] = y
    n += 1
    if length > 0:
        if cm == y:
            ptr, length = ptr + 1, min(length + 1, MAX_LENGTH)
        else:
            length = 0
    if n >= MIN_MATCH:
        s = context_slot(hist[r], n, MIN_MATCH)
        if length == 0 and match[r, s] > 0:
            at, found = np.int64(match[r, s]), 0
            while found < MAX_VERIFY and found < at and hist[r, at - 1 - found] == hist[r, n - 1 - found]:
                found += 1
            if found >= MIN_MATCH:
                ptr, length = at, found
        match[r, s] = n
    if n >= 3:
        s = context_slot(hist[r], n - 1, 2)
        v = np.int64(order2[r, s])
        if v and (v >> 2) - 1 == y:
            order2[r, s] = v + (1 if v & 3 < 3 else 0)
        else:
            order2[r, s] = (y + 1) << 2
    where[r, 0], where[r, 1], where[r, 2] = n, ptr, length


@numba.njit(cache=True, nogil=True)
def _adapt_row(row, bias, exp_table, likely):
    """Add a row's bias to its logits ``row (V,)``, in place, and note in ``likely`` what its
    learning needs: the biased table's ``sum(P)``, how many tokens are likely, those tokens and
    their ``P``; returns the biased row's best logit. The likely tokens are those within the
    widest span ``BIAS_SPAN * 2**-j`` of the best that holds at most ``BIAS_TOP`` (the first
    ``BIAS_TOP`` by id, should ties fill span 0): the tokens within ``BIAS_SPAN`` are gathered in one
    pass, and the span narrowed among them (the whole row is read again only where more than
    ``_NEAR`` are that near)."""
    best = np.iinfo(np.int64).min
    for v in range(row.shape[0]):
        row[v] += bias[v]
        best = max(best, row[v])
    last, whole, near = exp_table.shape[0] - 1, 0, 0
    for v in range(row.shape[0]):
        whole += exp_table[min(best - row[v], last)]
    ids = np.empty(_NEAR, np.int64)
    for v in range(row.shape[0]):
        if row[v] >= best - BIAS_SPAN:
            if near < _NEAR:
                ids[near] = v
            near += 1
    if near > _NEAR:  # rare: a flat row
        ids = np.flatnonzero(row >= best - BIAS_SPAN)
    ids = ids[:near]
    span, n = BIAS_SPAN, near
    while n > BIAS_TOP and span > 0:
        span >>= 1
        n = 0
        for v in ids:
            n += row[v] >= best - span
    n = 0
    for v in ids:
        if row[v] >= best - span and n < BIAS_TOP:
            likely[2 + n], likely[2 + BIAS_TOP + n] = v, exp_table[best - row[v]]
            n += 1
    likely[0], likely[1] = whole, n
    return best


@numba.njit(cache=True, nogil=True)
def _adapt_learn(y, bias, likely):
    """The token after an ``_adapt_row`` was ``y``: one step of the bias down the log loss's gradient."""
    whole = likely[0]
    for k in range(likely[1]):
        v = likely[2 + k]
        bias[v] = max(bias[v] - BIAS_RATE * likely[2 + BIAS_TOP + k] // whole, -BIAS_CLAMP)
    bias[y] = min(bias[y] + BIAS_RATE, BIAS_CLAMP)


@numba.njit(cache=True, nogil=True, inline="always")
def _want_stats(row, best, whole, want, exp_table, out):
    """``_stats``' numbers of a row, from its best logit and ``sum(P)``: that sum, then ``P`` of each
    token of ``want`` (-1: none, 0)."""
    out[0] = whole
    for k in range(want.shape[0]):
        out[1 + k] = exp_table[min(best - row[want[k]], exp_table.shape[0] - 1)] if want[k] >= 0 else 0


@numba.njit(cache=True, nogil=True, parallel=True)
def _adapt(rows, tokens, logits, want, bias, likely, exp_table, stats):
    """Encoding: bias each logit row ``i`` by row ``rows[i]``'s bias, each row's tokens in order,
    learning ``tokens[i]``; ``stats`` receives ``_stats`` of the biased rows for ``want``."""
    order = np.argsort(rows, kind="mergesort")  # stable: a row's tokens stay in order
    ends = np.append(np.flatnonzero(rows[order][1:] != rows[order][:-1]) + 1, rows.shape[0])
    for s in numba.prange(ends.shape[0]):
        for j in range(ends[s - 1] if s > 0 else 0, ends[s]):
            i = order[j]
            r = rows[i]
            best = _adapt_row(logits[i], bias[r], exp_table, likely[r])
            _want_stats(logits[i], best, likely[r, 0], want[i], exp_table, stats[i])
            _adapt_learn(tokens[i], bias[r], likely[r])


@numba.njit(cache=True, nogil=True, parallel=True)
def _adapt_rows(rows, logits, want, bias, likely, exp_table, stats):
    """Decoding: ``_adapt`` without the learning, for distinct rows."""
    for i in numba.prange(rows.shape[0]):
        best = _adapt_row(logits[i], bias[rows[i]], exp_table, likely[rows[i]])
        _want_stats(logits[i], best, likely[rows[i], 0], want[i], exp_table, stats[i])


@numba.njit(cache=True, nogil=True)
def _adapt_learn_rows(rows, tokens, bias, likely):
    for i in range(rows.shape[0]):
        _adapt_learn(tokens[i], bias[rows[i]], likely[rows[i]])


# -- batches ---------------------------------------------------------------------------------
#
# The model's tables enter through four numbers a token (``_stats``): ``sum(P)`` of its row, and
# ``P`` of each candidate and of the token itself, before mixing. The encoder knows every token, so
# it plans a block's candidates first (``_plan``: the small models alone), takes the block's stats,
# then mixes the block (``_mix``: biases, and the weights learn); the decoder proposes, takes the
# stats, biases, looks the symbol up and learns it. Either way each row sees the same integers in
# the same order, so the two agree, and the logits never leave the device they were computed on.

@numba.njit(cache=True, nogil=True)
def _plan(rows, tokens, out, hist, match, order2, where, hits, weights, proposal, pending, ln_mant, ln_pow, sq, gated):
    for i in range(rows.shape[0]):
        r = rows[i]
        _propose(r, hist, match, order2, where, hits, weights, proposal, pending, ln_mant, ln_pow, sq, gated)
        out[i] = pending[r]
        _advance(r, tokens[i], hist, match, order2, where, hits, proposal)


@numba.njit(cache=True, nogil=True)
def _mix(rows, tokens, planned, stats, out, hist, match, order2, where, hits, weights, proposal, pending,
         ln_mant, ln_pow, sq, gated):
    for i in range(rows.shape[0]):
        r = rows[i]
        pending[r] = planned[i]
        _bias(r, stats[i, 0], stats[i, 1:3], weights, pending, ln_mant, ln_pow, sq, out[i])
        _learn(r, tokens[i], weights, pending)


@numba.njit(cache=True, nogil=True, parallel=True)
def _propose_rows(rows, out, hist, match, order2, where, hits, weights, proposal, pending, ln_mant, ln_pow, sq, gated):
    for i in numba.prange(rows.shape[0]):
        r = rows[i]
        _propose(r, hist, match, order2, where, hits, weights, proposal, pending, ln_mant, ln_pow, sq, gated)
        out[i, 0], out[i, 1] = pending[r, 0, 0], pending[r, 1, 0]


@numba.njit(cache=True, nogil=True, parallel=True)
def _bias_rows(rows, stats, out, hist, match, order2, where, hits, weights, proposal, pending, ln_mant, ln_pow, sq, gated):
    for i in numba.prange(rows.shape[0]):
        _bias(rows[i], stats[i, 0], stats[i, 1:3], weights, pending, ln_mant, ln_pow, sq, out[i])


@numba.njit(cache=True, nogil=True, parallel=True)
def _learn_rows(rows, tokens, hist, match, order2, where, hits, weights, proposal, pending, ln_mant, ln_pow, sq, gated):
    for i in numba.prange(rows.shape[0]):
        _learn(rows[i], tokens[i], weights, pending)
        _advance(rows[i], tokens[i], hist, match, order2, where, hits, proposal)


@numba.njit(cache=True, nogil=True, parallel=True)
def _row_stats(logits, want, exp_table, out):
    for i in numba.prange(logits.shape[0]):
        row = logits[i]
        best, _, whole = _int_row(row, exp_table, np.empty(row.shape[0], np.int64))
        _want_stats(row, best, whole, want[i], exp_table, out[i])


def _stats(logits: np.ndarray | torch.Tensor, cands: np.ndarray, tokens: np.ndarray | None,
           exp_table: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(N, 4)`` int64: each row's ``sum(P)``, then ``P`` of its two candidates ``cands (N, 2)``
    (-1: none, 0) and of its token (``tokens``; None: 0), under the model alone. ``logits`` stay
    where they are: numba on a CPU array, torch on a device tensor (the same integers)."""
    want = _i64(np.concatenate([cands, (np.full(len(cands), -1) if tokens is None else tokens)[:, None]], axis=1))
    if isinstance(logits, np.ndarray):
        out = np.empty((len(want), 4), dtype=np.int64)
        _row_stats(logits, want, exp_table, out)
        return out
    p, _ = int_probabilities(logits, exp_table)  # (N, V)
    idx = torch.from_numpy(want).to(logits.device)
    picked = torch.where(idx >= 0, p.gather(1, idx.clamp(min=0)), 0)
    return torch.cat([p.sum(-1, keepdim=True), picked], 1).cpu().numpy()


def _apply(logits: np.ndarray | torch.Tensor, cands: np.ndarray, biases: np.ndarray) -> None:
    """Move each row's candidates' logits by their biases, in place (``logits (N, V)``, on any device)."""
    i, k = np.nonzero(cands >= 0)
    if isinstance(logits, np.ndarray):
        logits[i, cands[i, k]] += biases[i, k]  # a row's two candidates differ
    else:
        at = (torch.from_numpy(i).to(logits.device), torch.from_numpy(cands[i, k]).to(logits.device))
        with torch.inference_mode():  # the logits were made in it
            logits.index_put_(at, torch.from_numpy(biases[i, k]).to(logits.device), accumulate=True)


def observe(state: State, logits: np.ndarray | torch.Tensor, rows: np.ndarray, tokens: np.ndarray,
            exp_table: np.ndarray | torch.Tensor) -> np.ndarray:
    """Encoding: mix ``logits (N, V)`` in place (a CPU array, or a tensor on its device), logit row
    ``i`` predicting ``tokens[i]`` of row ``rows[i]``, each row's tokens in order, and learn each
    token. Returns ``(N, 2)``: the token's ``P`` and the row's ``sum(P)`` under the model alone."""
    rows, tokens = _i64(rows), _i64(tokens)
    planned = np.empty((len(rows), 2, 3 + INPUTS), dtype=np.int64)
    _plan(rows, tokens, planned, *state.arrays())
    cands = np.ascontiguousarray(planned[:, :, 0])
    model = _stats(logits, cands, tokens, exp_table)
    alone = model[:, [3, 0]]
    if state.bias.shape[1]:
        table, want = _host(exp_table), np.concatenate([cands, tokens[:, None]], axis=1)
        _on_cpu(logits, lambda a: _adapt(rows, tokens, a, want, state.bias, state.likely, table, model))
    biases = np.empty((len(rows), 2), dtype=np.int64)
    _mix(rows, tokens, planned, model, biases, *state.arrays())
    _apply(logits, cands, biases)
    return alone


def predict(state: State, logits: np.ndarray | torch.Tensor, rows: np.ndarray,
            exp_table: np.ndarray | torch.Tensor) -> None:
    """Decoding: mix ``logits (N, V)`` in place, row ``i`` the next token of ``rows[i]`` (distinct rows)."""
    rows = _i64(rows)
    cands, biases = np.empty((len(rows), 2), dtype=np.int64), np.empty((len(rows), 2), dtype=np.int64)
    _propose_rows(rows, cands, *state.arrays())
    if state.bias.shape[1]:
        table, stats = _host(exp_table), np.empty((len(rows), 3), dtype=np.int64)
        _on_cpu(logits, lambda a: _adapt_rows(rows, a, cands, state.bias, state.likely, table, stats))
    else:
        stats = _stats(logits, cands, None, exp_table)
    _bias_rows(rows, stats, biases, *state.arrays())
    _apply(logits, cands, biases)


def learn(state: State, rows: np.ndarray, tokens: np.ndarray) -> None:
    """Decoding: the tokens ``predict``'s rows turned out to be."""
    rows, tokens = _i64(rows), _i64(tokens)
    _learn_rows(rows, tokens, *state.arrays())
    if state.bias.shape[1]:
        _adapt_learn_rows(rows, tokens, state.bias, state.likely)


def _on_cpu(logits: np.ndarray | torch.Tensor, kernel) -> None:
    """Run ``kernel`` on ``logits`` as a CPU array, in place. A device's logits make the round
    trip whole: the adaptive bias moves every logit, a token after a token, as numba does it."""
    if isinstance(logits, np.ndarray):
        kernel(logits)
        return
    host = logits.cpu().numpy()
    kernel(host)
    with torch.inference_mode():
        logits.copy_(torch.from_numpy(host))


def _host(a: np.ndarray | torch.Tensor) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.cpu().numpy()


def _i64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)
