"""Coding on a Ray cluster in local mode: the files are this process's files, and a killed worker loses nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lmzip import LMZip, cluster
from lmzip.mixer import REVISION
from lmzip.predictor import ENGINE

ray = pytest.importorskip("ray")

# Several batches of a few short chunks, so that both workers code and the results come back out of order.
OPTIONS = {"batch_size": 3, "chunk_tokens": 40, "context": 16}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield cluster.Ray(workers=2)
    ray.shutdown()


@pytest.fixture(scope="module")
def text() -> bytes:
    return (Path(__file__).resolve().parents[1] / "README.md").read_bytes()[:3000]


def test_a_cluster_writes_the_local_file_and_decodes_it(tiny_model_dir, local_ray, text):
    here = LMZip(str(tiny_model_dir), **OPTIONS)
    there = LMZip(str(tiny_model_dir), **OPTIONS, cluster=local_ray)
    blob = there.compress(text)
    assert blob == here.compress(text)
    assert there.last_stats.lm_chunks >= 4 * OPTIONS["batch_size"]
    assert there.decompress(blob) == text
    pids = ray.get([a.pid.remote() for a in there.workers.actors])
    assert len(set(pids)) == 2


def test_default_chunking_gives_every_worker_a_batch(tiny_model_dir, local_ray):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_bytes()  # over 2 x 2048 tokens
    there = LMZip(str(tiny_model_dir), batch_size=1, context=16, cluster=local_ray)
    blob = there.compress(readme)
    assert there.last_stats.lm_chunks == 2  # one chunk alone would leave a worker idle
    assert blob == LMZip(str(tiny_model_dir), batch_size=2, context=16).compress(readme)
    assert there.decompress(blob) == readme


def test_a_killed_worker_is_restarted_and_its_batch_coded_again(tiny_model_dir, local_ray, text):
    here = LMZip(str(tiny_model_dir), **OPTIONS)
    workers = local_ray.workers(LMZip(str(tiny_model_dir), **OPTIONS, cluster=local_ray))
    rows = [here.lm.tokenizer.encode(text[i : i + 250].decode(errors="ignore")) for i in range(0, 3000, 250)]
    jobs = [rows[i : i + 2] for i in range(0, len(rows), 2)]
    coded = workers.encode(jobs, 16, 24, REVISION, ENGINE, None)
    first = next(coded)  # both actors are busy now: one is killed with a batch in hand
    victim = workers.actors[1]
    before = ray.get(victim.pid.remote())
    ray.kill(victim, no_restart=False)
    got = [first, *coded]
    assert ray.get(victim.pid.remote()) != before  # a new process took its place
    want = list(here.workers.encode(jobs, 16, 24, REVISION, ENGINE, None))
    assert [g.payloads for g in got] == [w.payloads for w in want]
    decoded = list(workers.decode([(g.payloads, [len(r) for r in job]) for g, job in zip(got, jobs)], 16, 24, REVISION,
                                   ENGINE, None))
    assert decoded == jobs


def test_cli_compresses_on_a_local_cluster_for_the_plain_decoder(tiny_model_dir, tmp_path, text):
    src = tmp_path / "in.txt"
    src.write_bytes(text)
    lmzip = [sys.executable, "-m", "lmzip"]
    done = subprocess.run([*lmzip, "compress", str(src), "-m", str(tiny_model_dir), "-q", "--ray", "--workers", "2",
                           "--batch-size", "3", "--chunk-tokens", "40"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "back.txt"
    done = subprocess.run([*lmzip, "decompress", str(src) + ".lmz", "-o", str(out), "-m", str(tiny_model_dir), "-q"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == text


def test_bpc_on_a_cluster_equals_the_single_process_rows(tiny_lm, local_ray, tmp_path, text):
    """The same windows, batched the same way, summed in the same order: only the float
    arithmetic of other processes may differ, bounded here."""
    from lmzip.analysis import bpc

    path = tmp_path / "doc.txt"
    path.write_bytes(text)
    here = bpc.measure(tiny_lm, str(path), window=48, stride=16, batch_size=3)
    there = bpc.measure(tiny_lm, str(path), window=48, stride=16, batch_size=3, scorer=local_ray.scorer(tiny_lm))
    assert here.scored_tokens == there.scored_tokens > 500
    assert abs(there.bits - here.bits) <= 1e-6 * here.bits
    assert {k: v for k, v in there.as_dict().items() if k not in ("bits", "bpc", "bits_per_byte")} == \
        {k: v for k, v in here.as_dict().items() if k not in ("bits", "bpc", "bits_per_byte")}


def test_workers_without_ray_are_refused():
    from click.testing import CliRunner

    from lmzip.cli import main

    result = CliRunner().invoke(main, ["compress", "x.txt", "--workers", "2"])
    assert result.exit_code == 2 and "--workers needs --ray" in result.output


def test_the_first_actors_take_the_clusters_gpus():
    assert cluster.gpus(3, {"CPU": 16.0}) == [0, 0, 0]
    assert cluster.gpus(3, {"CPU": 16.0, "GPU": 2.0}) == [1, 1, 0]
    assert cluster.gpus(2, {"CPU": 16.0, "GPU": 8.0}) == [1, 1]
