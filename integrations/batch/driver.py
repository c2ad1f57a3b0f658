"""The driver: :func:`run` hands inputs to idle workers, writes their rows, replaces dead
workers and shows progress."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cpllm_plugin.console import clock, progress_printer
from cpllm_plugin.errors import message, require

from .. import ffmpeg as ff
from .errors import BatchArgumentError, WorkerDiedError, WorkerStartError
from .inputs import identity, read_inputs
from .jobs import Job, error_row
from .output import Output
from .pool import LocalPool, RayPool

ATTEMPTS = 2  # a dead worker's input is tried on one more worker, then reported failed

@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a run did: inputs done, failed (error rows written), skipped (already in the
    output; ``failed_before`` of them with an error row), retried after a worker died, and
    the wall time of the run."""

    done: int
    failed: int
    skipped: int
    retried: int
    seconds: float
    output: str
    failed_before: int = 0

    @property
    def complete(self) -> bool:
        """Every input has a result row (none failed, now or before)."""
        return not (self.failed or self.failed_before)

    @property
    def per_minute(self) -> float:
        """Inputs run (done or failed) per minute of wall time, start-up included."""
        return (self.done + self.failed) * 60 / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        retried = f", {self.retried} retried" if self.retried else ""
        before = (f" ({self.failed_before} failed before: --retry-failed redoes them)"
                  if self.failed_before else "")
        return (f"cpllm batch: {self.done} done, {self.failed} failed, {self.skipped} skipped"
                f"{before}{retried} in {self.seconds:.1f} s ({self.per_minute:.1f} videos/min); "
                f"rows in {self.output}")


class _Progress:
    """A bar with rate and ETA on stderr: redrawn in place on a terminal, else one line
    every ``every`` seconds."""

    def __init__(self, total: int, quiet: bool, stream=None, every: float = 10.0):
        self.total, self.quiet, self.every = total, quiet, every
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0

    def show(self, ran: int, failed: int, final: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or self.total == 0 or not (final or self.tty or
                                                 now - self.last >= self.every):
            return
        self.last = now
        rate = ran * 60 / max(now - self.t0, 1e-9)
        eta = (self.total - ran) * 60 / rate if rate > 0 else None
        fill = round(20 * ran / self.total)
        text = (f"cpllm batch: [{'#' * fill}{'.' * (20 - fill)}] {ran}/{self.total} "
                f"({failed} failed)  {rate:.1f} videos/min  ETA {clock(eta)}")
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


# --- the driver ---------------------------------------------------------------------------


def run(inputs: str | os.PathLike | Iterable[str | os.PathLike], output: str | os.PathLike,
        job: Job, *, workers: int | None = None, ray: str | None = None,
        num_cpus: float = 1, num_gpus: float = 0, retry_failed: bool = False,
        quiet: bool = False, on_row: Callable[[dict], None] | None = None) -> RunSummary:
    """Run ``job`` over every input, appending one row per input to ``output``.

    Args:
        inputs: specs for :func:`read_inputs` (a list file, a JSONL manifest, a glob, video
            paths).
        output: the JSONL file; rows already in it are kept and their inputs skipped.
        job: :class:`ScoreJob`, :class:`PickJob` or any :class:`Job`.
        workers: worker processes or actors (default: one per ``num_cpus`` cores here, or
            as many as the Ray cluster's CPUs and GPUs allow).
        ray: None for local processes; ``"auto"`` (a running cluster, else a local
            instance), ``"ray://HEAD:10001"`` or ``HOST:PORT`` for Ray. A process already
            connected to Ray uses that connection.
        num_cpus: CPUs per worker (ONNX Runtime threads: this, at least 1).
        num_gpus: GPUs per worker (Ray only; fractions share a GPU).
        retry_failed: redo inputs whose row is an error.
        quiet: no progress on stderr.
        on_row: called with each row written (the CLI's ``--json`` prints them).

    Returns:
        The :class:`RunSummary` (``failed`` counts error rows written by this run).

    Raises:
        MissingExtraError: ``ray`` given but Ray not installed.
        WorkerStartError: no worker could load the job's model.
    """
    t0 = time.monotonic()
    if num_cpus <= 0 or num_gpus < 0 or (workers is not None and workers < 1):
        raise BatchArgumentError(message(
            "cpllm batch", "num_cpus > 0, num_gpus >= 0 and workers >= 1",
            f"num_cpus={num_cpus}, num_gpus={num_gpus}, workers={workers}",
            "give positive worker sizes"))
    if num_gpus and ray is None:
        raise BatchArgumentError(message(
            "cpllm batch --num-gpus", "--ray (GPUs are shared out by Ray)", "no --ray",
            "add --ray auto, or drop --num-gpus (local workers use a GPU the backend finds)"))
    if ray is not None:
        require("ray", "ray", "cpllm batch --ray")
    paths = read_inputs(inputs)
    sink = Output(Path(output))
    try:
        with ThreadPoolExecutor(8) as io:  # identities read while the workers load
            idents = io.map(identity, paths)
            if ray is None:
                cpus = max(1, int(num_cpus))
                pool = LocalPool(job, workers or max(1, int(ff.cpus() // num_cpus)), cpus)
            else:
                pool = RayPool(job, workers, num_cpus, num_gpus, ray)
            d = _Driver(pool, job, sink, quiet, on_row)
            try:
                d.start()
                d.plan(paths, list(idents), retry_failed)
                d.loop()
            except BaseException:
                pool.close(abort=True)  # interrupted or failed: stop inputs in progress now
                raise
            pool.close()
    finally:
        sink.close()
    return RunSummary(d.done, d.failed, d.skipped, d.retried, round(time.monotonic() - t0, 3),
                   str(output), d.failed_before)


class _Driver:
    """Hands inputs to idle workers and writes their rows; replaces dead workers."""

    def __init__(self, pool, job: Job, sink: Output, quiet: bool, on_row):
        self.pool, self.job, self.sink, self.quiet, self.on_row = pool, job, sink, quiet, on_row
        self.say = progress_printer(not quiet, "cpllm batch: ")
        self.model_id: str | None = None
        self.ready: set[int] = set()
        self.busy: dict[int, tuple[str, int]] = {}  # worker -> (key, attempt)
        self.queue: collections.deque[tuple[str, int]] = collections.deque()
        self.todo: dict[str, list[str]] = {}  # key -> paths with that content
        self.done = self.failed = self.skipped = self.retried = self.early_deaths = 0
        self.failed_before = 0  # skipped inputs whose row is an error
        self.progress: _Progress | None = None

    def start(self) -> None:
        """Start every worker and wait for the first one's model id."""
        self.say(self.pool.where())
        for wid in range(self.pool.workers):
            self.pool.start(wid)
        t0, told = time.monotonic(), False
        while self.model_id is None:
            self.handle(self.pool.events(1.0))
            if not told and time.monotonic() - t0 > 120:
                told = True  # e.g. Ray actors asking for GPUs a cluster does not have
                self.say(f"no worker ready after 2 minutes ({self.pool.where()}); "
                         "check that the cluster has the CPUs and GPUs a worker asks for")

    def plan(self, paths: list[str], idents: list[str], retry_failed: bool) -> None:
        """Skip inputs with rows, copy rows for content already done, queue the rest."""
        opts = json.dumps(self.job.options(), sort_keys=True)
        copies = []
        for path, ident in zip(paths, idents, strict=True):
            key = hashlib.sha256(f"{ident}\n{opts}\n{self.model_id}".encode()).hexdigest()[:24]
            prev = self.sink.rows.get(key)
            redo = prev is not None and retry_failed and prev["type"] == "error"
            if prev is not None and not redo and prev["type"] == "error":
                self.failed_before += 1
            if (key, path) in self.sink.seen and not redo:
                self.skipped += 1
            elif prev is not None and not redo:
                copies.append((path, prev))
            else:
                self.todo.setdefault(key, []).append(path)
        if retry_failed:
            self.sink.drop_errors(set(self.todo))
        for path, prev in copies:
            self.skipped += 1
            self.emit({**prev, "path": path, "batch": {**prev["batch"], "copy_of": prev["path"]}})
        self.queue.extend((k, 1) for k in self.todo)
        total = sum(map(len, self.todo.values()))
        self.say(f"{total} to run, {self.skipped} already in {self.sink.path}"
                 + (f" ({self.sink.foreign} other lines ignored)" if self.sink.foreign else ""))
        self.progress = _Progress(total, self.quiet)

    def loop(self) -> None:
        while self.queue or self.busy:
            for wid in sorted(self.ready - self.busy.keys()):
                if not self.queue:
                    break
                key, attempt = self.queue.popleft()
                self.busy[wid] = (key, attempt)
                # Absolute: a worker's folder is not the driver's (Ray nodes).
                self.pool.submit(wid, os.path.abspath(self.todo[key][0]))
            self.handle(self.pool.events(1.0))
            if self.queue or self.busy:
                self.progress.show(self.done + self.failed, self.failed)
        self.progress.show(self.done + self.failed, self.failed, final=True)

    def handle(self, events: list[tuple]) -> None:
        for wid, ev in events:
            if ev[0] == "ready":
                if self.model_id not in (None, ev[1]):
                    raise WorkerStartError(message(
                        "cpllm batch", "the same model on every worker",
                        f"{ev[1]} on worker {wid}, {self.model_id} on others",
                        "install the same model (and cpllm-plugin) on every node"))
                self.model_id = ev[1]
                self.ready.add(wid)
            elif ev[0] == "fatal":
                raise WorkerStartError(message(
                    "cpllm batch: loading the job in a worker", "the model to load",
                    f"{ev[1]}: {ev[2]}", "fix the job's options (the error above says how)"))
            elif ev[0] == "row":
                key, attempt = self.busy.pop(wid)
                self.finish(key, ev[1], attempt)
            else:
                self.died(wid, ev[1])

    def died(self, wid: int, why: str) -> None:
        self.ready.discard(wid)
        task = self.busy.pop(wid, None)
        if task is None:
            self.early_deaths += 1
            if self.early_deaths > 2 * self.pool.workers:
                raise WorkerStartError(message(
                    "cpllm batch", "workers that start", f"{self.early_deaths} deaths of "
                    f"workers before they took an input, the last: {why}",
                    "check that every node has cpllm-plugin (same version) and memory for "
                    "the model; one input with cpllm score shows the model's own errors"))
        else:
            key, attempt = task
            if attempt < ATTEMPTS:
                self.retried += 1
                self.queue.appendleft((key, attempt + 1))
                self.say(f"a worker died on {self.todo[key][0]} ({why}); trying it on "
                         "another worker")
            else:
                path = self.todo[key][0]
                self.finish(key, error_row(path, WorkerDiedError.__name__, message(
                    "cpllm batch", "a worker that survives the input", f"{ATTEMPTS} workers "
                    f"died on {path}, the last: {why}", "check its size and "
                    "memory per worker (--num-cpus gives a worker more of a node)")),
                    attempt)
        if self.queue or self.busy or self.model_id is None:
            self.pool.replace(wid)

    def emit(self, row: dict) -> None:
        self.sink.write(row)
        if self.on_row:
            self.on_row(row)

    def finish(self, key: str, row: dict, attempt: int) -> None:
        batch = {"key": key, "attempts": attempt, **row.pop("batch", {})}
        for path in self.todo[key]:
            self.emit({**row, "path": path, "batch": batch})
            if row["type"] == "error":
                self.failed += 1
            else:
                self.done += 1
