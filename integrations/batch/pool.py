"""Where inputs run: :class:`BatchWorker` loads the job once and runs one input at a time, in
local worker processes (:class:`LocalPool`) or Ray actors (:class:`RayPool`).

A pool starts, feeds, replaces and stops workers; :meth:`events` reports what they did as
``(worker, ("ready", model id) | ("fatal", error, message) | ("row", row) | ("died", why))``.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

from cpllm_plugin.errors import require

from .. import ffmpeg as ff
from .jobs import Job, error_row


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _share(cpus: int, cores: Sequence[int] | None) -> None:
    """Keep this worker within its share: ``cpus`` threads (OpenMP, ffmpeg via CPLLM_CPUS)
    and, for local workers, its own cores."""
    os.environ["OMP_NUM_THREADS"] = str(cpus)
    os.environ["CPLLM_CPUS"] = str(cpus)
    if cores:
        os.sched_setaffinity(0, cores)


class BatchWorker:
    """One worker: loads the job's model once, then runs inputs one at a time.

    The same class serves local worker processes and Ray actors.
    """

    def __init__(self, job: Job, cpus: int, cores: Sequence[int] | None = None):
        _share(cpus, cores)
        self.job = job
        try:
            self.state = ("ready", job.load(cpus))
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which stops the batch
            self.state = ("fatal", type(exc).__name__, str(exc))

    def ready(self) -> tuple:
        """``("ready", model_id)`` or ``("fatal", error class, message)``."""
        return self.state

    def run(self, path: str) -> dict:
        """The row of ``path``; any exception becomes an error row (the batch goes on)."""
        t0 = time.perf_counter()
        try:
            row = self.job(path)
        except Exception as exc:  # noqa: BLE001 - failure isolation: the error is the row
            row = error_row(path, type(exc).__name__, str(exc))
        row["batch"] = {"seconds": round(time.perf_counter() - t0, 3),
                        "worker": _worker_name()}
        return row


def _serve(conn, job: Job, cpus: int, cores: list[int] | None) -> None:
    """A local worker process: answer ready, then one row per path until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver, which stops us
    signal.signal(signal.SIGTERM, _on_term)
    _die_with_parent()
    w = BatchWorker(job, cpus, cores)
    try:
        conn.send(w.ready())
        while (path := conn.recv()) is not None:
            conn.send(("row", w.run(path)))
    except (EOFError, BrokenPipeError):
        pass  # the driver is gone


def _on_term(signum, frame):
    # Stop a pick's ffmpeg processes; SystemExit lets the ladder remove its temporary files.
    ff.stop_all()
    raise SystemExit(128 + signum)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the driver dies (a killed driver leaves no
    workers behind)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: workers still stop when the driver's pipe closes


class LocalPool:
    """Worker processes on this machine (spawned: no state is shared with the driver)."""

    def __init__(self, job: Job, workers: int, cpus: int):
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        self.job, self.workers, self.cpus = job, workers, cpus
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        fits = workers * cpus <= len(cores)
        self.cores = {w: cores[w * cpus:(w + 1) * cpus] if fits else None
                      for w in range(workers)}
        self.live: dict[int, tuple] = {}

    def where(self) -> str:
        return f"{self.workers} local worker process(es), {self.cpus} CPU(s) each"

    def start(self, wid: int) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_serve, args=(child, self.job, self.cpus,
                                                     self.cores[wid]), daemon=True,
                                name=f"cpllm-batch-{wid}")
        proc.start()
        child.close()
        self.live[wid] = (proc, parent)

    def submit(self, wid: int, path: str) -> None:
        self.live[wid][1].send(path)

    def events(self, timeout: float) -> list[tuple]:
        from multiprocessing.connection import wait

        owner = {}
        for wid, (proc, conn) in self.live.items():
            owner[conn] = owner[proc.sentinel] = wid
        out = []
        for wid in dict.fromkeys(owner[o] for o in wait(list(owner), timeout)):
            proc, conn = self.live[wid]
            try:
                while conn.poll():
                    out.append((wid, conn.recv()))
            except (EOFError, OSError):
                proc.join(5)
            if not proc.is_alive():
                conn.close()
                del self.live[wid]
                code = proc.exitcode
                out.append((wid, ("died", f"killed by signal {-code}" if code and code < 0
                                  else f"exit code {code}")))
        return out

    def replace(self, wid: int) -> None:
        self.stop(wid)
        self.start(wid)

    def stop(self, wid: int) -> None:
        proc, conn = self.live.pop(wid, (None, None))
        if proc is not None:
            proc.kill()
            proc.join()
            conn.close()

    def close(self, abort: bool = False) -> None:
        """Stop the workers: idle ones when told, busy ones (``abort``) by SIGTERM, which
        stops a pick's ffmpeg and removes its temporary files."""
        for proc, conn in self.live.values():
            try:
                conn.send(None)
            except OSError:
                pass
            if abort:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc, conn in self.live.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
        self.live.clear()


class RayPool:
    """Ray actors, one :class:`BatchWorker` each."""

    def __init__(self, job: Job, workers: int | None, cpus: float, gpus: float, address: str):
        self.ray = ray = require("ray", "ray", "cpllm batch --ray")
        self.started = not ray.is_initialized()
        self.place = "connected"
        if self.started:
            if address == "auto":
                try:
                    ray.init(address="auto", logging_level="warning")
                except ConnectionError:  # no cluster running: start one here
                    ray.init(include_dashboard=False, logging_level="warning")
                    self.place = "started a local instance"
            else:
                ray.init(address=address, logging_level="warning")
        have = ray.cluster_resources()
        if workers is None:
            fit = [have.get("CPU", 0) / cpus] + ([have.get("GPU", 0) / gpus] if gpus else [])
            workers = max(1, int(min(fit)))
        self.workers, self.cpus, self.gpus, self.have = workers, cpus, gpus, have
        self.threads = max(1, int(cpus))
        self.cls = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0,
                              max_task_retries=0)(BatchWorker)
        self.job = job
        self.actors: dict[int, Any] = {}
        self.refs: dict[Any, int] = {}

    def where(self) -> str:
        gpus = f", {self.gpus:g} GPU(s)" if self.gpus else ""
        return (f"{self.workers} Ray actor(s), {self.cpus:g} CPU(s){gpus} each; Ray "
                f"{self.place} ({self.have.get('CPU', 0):g} CPUs, "
                f"{self.have.get('GPU', 0):g} GPUs)")

    def start(self, wid: int) -> None:
        self.actors[wid] = self.cls.remote(self.job, self.threads)
        self.refs[self.actors[wid].ready.remote()] = wid

    def submit(self, wid: int, path: str) -> None:
        self.refs[self.actors[wid].run.remote(path)] = wid

    def events(self, timeout: float) -> list[tuple]:
        ray = self.ray
        if not self.refs:
            time.sleep(timeout)
            return []
        done, _ = ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        out = []
        for ref in done:
            wid = self.refs.pop(ref)
            try:
                got = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.OutOfMemoryError) as exc:
                self.actors.pop(wid, None)
                why = (str(exc).strip().splitlines() or [""])[0][:300]
                out.append((wid, ("died", f"{type(exc).__name__}: {why}")))
                continue
            out.append((wid, got if isinstance(got, tuple) else ("row", got)))
        return out

    def replace(self, wid: int) -> None:
        self.stop(wid)
        self.start(wid)

    def stop(self, wid: int) -> None:
        actor = self.actors.pop(wid, None)
        if actor is not None:
            self.ray.kill(actor, no_restart=True)
        self.refs = {r: w for r, w in self.refs.items() if w != wid}

    def close(self, abort: bool = False) -> None:
        for wid in list(self.actors):
            self.stop(wid)
        if self.started:
            self.ray.shutdown()
