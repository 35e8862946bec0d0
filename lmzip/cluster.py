"""Coding on a Ray cluster: a frame's batches of chunks spread over actors, each with the model loaded once.

The integer engine's tables depend on each chunk's tokens alone, never on the batch, the thread
count or the machine (``predictor``), so a batch coded on any actor gives the bytes this process
would have written, and a file compressed on a cluster is the very file ``lmzip compress`` writes
here. Ray schedules and restarts; lmzip only hands out batches, in order, and checks each actor's
model fingerprint before it codes anything. ``pip install 'lmzip[cluster]'``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from . import models
from .errors import InputError, ModelError

RETRIES = 3  # an actor that dies is restarted, and its batch coded again, this many times


class _Worker:
    """A Ray actor: a model loaded once, the integer engine's to code whole batches of chunks
    (``kind`` "int"), or the float one's to score batches of the paper's windows ("float")."""

    def __init__(self, model: str, kind: str, dtype: str | None) -> None:
        import numba
        import torch

        torch.set_num_threads(1)  # its one CPU: torch and numba would otherwise take every core of the node
        numba.set_num_threads(1)
        self.kind = kind
        self.lm = models.load_integer(model) if kind == "int" else models.load(model, dtype=dtype)

    def fingerprint(self) -> str:
        return self.lm.integer_fingerprint if self.kind == "int" else self.lm.fingerprint

    def pid(self) -> int:
        return os.getpid()

    def encode(self, rows: list[list[int]], context: int, precision: int, mix: str | None, revision: str):
        return self.lm.predictor().encode(rows, context, precision, None, mix, revision)

    def decode(self, payloads: list[bytes], lengths: list[int], context: int, precision: int, mix: str | None,
               revision: str):
        return self.lm.predictor().decode(payloads, lengths, context, precision, None, mix, revision)

    def window_nats(self, ids, batch: list[tuple[int, int, int]]) -> float:
        from .analysis.bpc import window_nats

        return window_nats(self.lm, ids, batch)


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'lmzip[cluster]'") from None
    return ray


class Ray:
    """A ``codec.Cluster`` on Ray: the cluster at ``address`` (None: a local one on this machine),
    with ``workers`` actors of one CPU each (None: one for each CPU the cluster has), the first of
    them each on a GPU of its own where the cluster has GPUs (``gpus``)."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.address, self.count = address, workers
        self.started: Actors | None = None

    def workers(self, lz) -> Actors:
        """``codec.Workers`` for the codec ``lz``: actors holding its integer model."""
        return self._actors(lz.lm.name, "int", None, lz.lm.integer_fingerprint)

    def scorer(self, lm: models.LanguageModel) -> Callable:
        """A ``bpc.Scorer`` for the float model ``lm``: its batches of windows scored on actors."""
        actors = self._actors(lm.name, "float", lm.dtype_name, lm.fingerprint)

        def score(ids, plan: list) -> Iterator[float]:
            ref = actors.ray.put(ids)  # the stream goes to the object store once, not with every batch
            return actors.map(lambda a, batch: a.window_nats.remote(ref, batch), plan)
        return score

    def _actors(self, model: str, kind: str, dtype: str | None, fingerprint: str) -> Actors:
        """The actors for one model and kind, checked against ``fingerprint``; started at the first
        call, once the actors of the model before (whose CPUs they need) are gone."""
        if self.started is None or self.started.key != (model, kind):
            ray = _ray()
            if not ray.is_initialized():
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            if self.started is not None:
                self.started.stop()
            cpus = int(ray.cluster_resources().get("CPU", 0))
            count = self.count or max(1, cpus)
            if count > cpus:  # the actors past the cluster's CPUs would wait for ever
                raise InputError(f"{count} Ray workers need {count} CPUs; the cluster has {cpus}")
            self.started = Actors(ray, (model, kind), dtype, fingerprint, gpus(count, ray.cluster_resources()))
        return self.started


def gpus(count: int, resources: dict[str, float]) -> list[int]:
    """The GPUs each of ``count`` actors asks for: one for each of the first, as many as the cluster
    has, none for the rest. Ray shows an actor only its own GPU, so the model loads there
    (``models.resolve_device``); the next free actor takes the next batch, so fast ones take more."""
    on_gpu = min(count, int(resources.get("GPU", 0)))
    return [1] * on_gpu + [0] * (count - on_gpu)


class Actors:
    """``codec.Workers`` on Ray actors: each job goes to the next free actor; results come back in order."""

    def __init__(self, ray, key: tuple[str, str], dtype: str | None, fingerprint: str, gpus: list[int]) -> None:
        model, kind = key
        remote = ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)(_Worker)
        self.ray, self.key, self.count = ray, key, len(gpus)
        self.actors = [remote.options(num_gpus=n).remote(model, kind, dtype) for n in gpus]
        for actor, found in zip(self.actors, ray.get([a.fingerprint.remote() for a in self.actors])):
            if found != fingerprint:
                raise ModelError(f"a Ray worker loaded '{model}' with fingerprint {found}, not {fingerprint}: "
                                 "the cluster's machines do not hold the same model")

    def stop(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)

    def map(self, call: Callable, jobs: list, size: Callable[[object], int] = len, step=None) -> Iterator:
        """``call(actor, job)`` for each job on the next free actor; the results in the jobs' order."""
        from ray.util import ActorPool

        for job, result in zip(jobs, ActorPool(self.actors).map(call, jobs)):
            if step:
                step(size(job))
            yield result

    def encode(self, jobs, context, precision, mix, revision, step):
        return self.map(lambda a, rows: a.encode.remote(rows, context, precision, mix, revision), jobs,
                        lambda rows: sum(map(len, rows)), step)

    def decode(self, jobs, context, precision, mix, revision, step):
        return self.map(lambda a, job: a.decode.remote(*job, context, precision, mix, revision), jobs,
                        lambda job: sum(job[1]), step)
