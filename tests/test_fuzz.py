"""Fuzzing the container parser and the decoder, from the committed seed corpus (tests/data).

Every damaged file either decodes to its original bytes or raises one of lmzip's named errors
(``LmzipError``); any other exception, and any other output, is a finding. Bounded here
(``FUZZ_EXAMPLES`` a target); ``bench/fuzz.py`` runs the same property for hours.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import damage
from golden import DATA, SAMPLES
from lmzip import LMZip, LmzipError, container

FUZZ_EXAMPLES = int(os.environ.get("LMZIP_FUZZ_EXAMPLES", "400"))
SEEDS = {name: (DATA / f"tiny-{name}.lmz").read_bytes() for name in SAMPLES}
SEEDS |= {f"v5-{name}": (DATA / "v5" / f"tiny-{name}.lmz").read_bytes() for name in SAMPLES}  # still read
SMOLLM2_SEEDS = [p.read_bytes() for p in sorted(DATA.glob("smollm2-*.lmz"))]

position = st.integers(0, 2**16)
op = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(0, 7)),
    st.tuples(st.just("byte"), position, st.integers(0, 255)),
    st.tuples(st.just("truncate"), position),
    st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), position, st.integers(1, 64)),
    st.tuples(st.just("header"), st.sampled_from(damage.HEADER_PATHS),
              st.sampled_from(damage.JSON_VALUES + (damage._MISSING,))),
    st.tuples(st.just("table"), st.integers(0, 63), st.integers(0, 4), st.integers(0, 2**40)),
    st.tuples(st.just("footer"), st.integers(0, 1), st.integers(0, 2**40)),
)
fuzz = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@fuzz
@given(seed=st.sampled_from(sorted(SEEDS) + ["concatenated"] + [f"smollm2-{i}" for i in range(len(SMOLLM2_SEEDS))]),
       ops=st.lists(op, min_size=1, max_size=4))
def test_parser_raises_only_named_errors(seed, ops):
    if seed == "concatenated":
        blob = SEEDS["text"] + SEEDS["v5-code"]
    elif seed.startswith("smollm2-"):
        blob = SMOLLM2_SEEDS[int(seed.split("-")[1])]
    else:
        blob = SEEDS[seed]
    damaged = damage.apply(blob, ops)
    try:
        archives = container.members(damaged)
    except LmzipError:
        return
    for a in archives:  # what parsed is self-consistent
        assert sum(e.raw_size for e in a.entries) == a.footer.size
        assert all(f.raw_size <= container.FRAME_BYTES for f in a.frames)
        assert all(len(p) * 8 >= e.payload_bits for p, e in zip(a.payloads, a.entries))


@pytest.fixture(scope="module")
def golden_codec(golden_model_dir):
    """The seeds' codec, with every seed decoded once: each engine revision's numba kernels (the v5
    seeds are int/1, the others int/2) compile at first use, 20 s and more on a fresh checkout,
    which must not count against a damaged file's time limit."""
    codec = LMZip(str(golden_model_dir), batch_size=2)
    for name, blob in SEEDS.items():
        assert codec.decompress(blob) == (DATA / f"tiny-{name.removeprefix('v5-')}.orig").read_bytes()
    return codec


@fuzz
@given(seed=st.sampled_from(sorted(SEEDS)), ops=st.lists(op, min_size=1, max_size=3))
def test_damaged_files_never_decode_into_other_bytes(golden_codec, seed, ops):
    original = (DATA / f"tiny-{seed.removeprefix('v5-')}.orig").read_bytes()
    damaged = damage.apply(SEEDS[seed], ops)
    result = damage.outcome(lambda: golden_codec.decompress(damaged), original, damage.SLOW_SECONDS)
    assert not damage.is_finding(result), result


def test_findings_stay_fixed(golden_codec):
    """Regression cases: damages that once escaped as other exceptions."""
    blob = SEEDS["text"]
    for ops in [
        [("header", ("coding", "engine"), "lockstep-window-kv/4")],  # the removed float engine (once a KeyError)
        [("header", ("coding", "engine"), "int/99")],  # for_file read 'replay' of an unknown engine: KeyError
        [("header", ("coding", "precision"), 2**31)],  # an impossible precision
        [("header", ("coding", "context"), 0)],
        [("header", ("coding", "context"), 2**20)],  # past the KV window's longest: ValueError
        [("header", ("coding", "context"), 2)],  # a 2-slot window never freed a slot: decoded forever
    ]:
        with pytest.raises(LmzipError):
            golden_codec.decompress(damage.apply(blob, ops))


def test_a_table_claiming_a_million_tokens_stops_at_its_payload(golden_codec):
    """Tokens, size and footer resealed to claim 2^20 tokens (a CI run once sat in such a case for an
    hour): the decoder stops once it reads past the chunk's 719 bits, before any checksum can fail."""
    archive = container.parse(SEEDS["text"])
    archive.entries[0].tokens = archive.entries[0].raw_size = archive.footer.size = 2**20
    damaged = archive.to_bytes()  # the claim passes every checksum but the chunk's CRC and the SHA-256
    result = damage.outcome(lambda: golden_codec.decompress(damaged), b"", limit=damage.SLOW_SECONDS)
    assert result == "ChecksumError"
