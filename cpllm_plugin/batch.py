"""``cpllm batch``: score videos or pick their CRFs by the thousand, resumably.

One input (a video path) becomes one JSON row, made by the same code as the single-video
commands and written as soon as it is done:

- ``score``: the object ``cpllm score --json`` prints (``type``, ``path``, ``score``,
  ``frame_scores``, ..., ``model``, ``backend``).
- ``pick``: the pick object ``cpllm-ladder pick --json`` prints, with ``path`` and the probes
  it made embedded as ``probes`` (the ``--json`` probe objects), so one row tells all.
- a failure: ``{"type": "error", "path", "error": <class name>, "message"}``; the batch goes on.

Every row also carries ``batch``: ``key`` (what resume matches on: the input's content identity,
the job's options and the model id), ``attempts``, ``seconds`` and ``worker`` (host:pid).

Workers load the model once and take one input at a time. Without Ray they are local
processes, one per ``num_cpus`` cores, each pinned to its own cores; with Ray they are actors
asking for ``num_cpus``/``num_gpus`` each. ONNX Runtime runs ``num_cpus`` threads in each.
A worker that dies (killed, out of memory) is replaced and its input is tried once more on
another worker, then written as a ``WorkerDiedError`` row.

Resume: a run appends to its output. Inputs whose key already has a row there are skipped;
error rows are redone only with ``retry_failed`` (their old rows are dropped first, so every
input keeps exactly one row). A second path with the content of one already done gets a copy
of that row (``batch.copy_of``) instead of a second run.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import glob
import hashlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import click

from .errors import CpllmError, message, require

ATTEMPTS = 2  # a dead worker's input is tried on one more worker, then reported failed
# Pick options that change where or how loudly a pick runs, never its result: not in the key.
PICK_OPTIONS_NOT_IN_KEY = ("as_json", "quiet", "cache_dir", "no_cache", "ffmpeg", "temp_dir")


# --- errors -------------------------------------------------------------------------------


class BatchError(CpllmError):
    """Base of the batch's named errors."""


class BatchInputError(BatchError, ValueError):
    """An input list or manifest cannot be read, or it names no input."""


class BatchInputNotFoundError(BatchError, FileNotFoundError):
    """An input list, manifest or glob names nothing that exists."""


class BatchArgumentError(BatchError, ValueError):
    """A batch option is out of range or does not fit the others."""


class OutputLockedError(BatchError, RuntimeError):
    """Another batch is writing the same output file."""


class WorkerStartError(BatchError, RuntimeError):
    """Workers could not load the job (its model), or kept dying before taking an input."""


class WorkerDiedError(BatchError, RuntimeError):
    """The worker running an input died twice; the row of that input names this class."""


# --- inputs -------------------------------------------------------------------------------


def read_inputs(specs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Video paths named by ``specs``, in order, each once.

    Each spec is one of:

    - a text file of paths, one a line (blank lines and ``#`` comments skipped);
    - a JSONL manifest: one object a line with a ``path`` field;
    - a glob (``videos/**/*.mp4``; quote it for the shell);
    - a video file itself.

    A file is a list or a manifest when its head is text (no NUL byte, UTF-8); a manifest when
    its first entry starts with ``{``. Relative paths in a list or manifest start from the
    folder of that file.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    paths: list[str] = []
    for spec in specs:
        paths += _expand(str(spec))
    if not paths:
        raise BatchInputError(message("cpllm batch", "at least one input video",
                                      "none", "give a list, a manifest, a glob or video paths"))
    return list(dict.fromkeys(paths))


def _expand(spec: str) -> list[str]:
    p = Path(spec)
    if p.is_file():
        head = p.open("rb").read(4096)
        if b"\0" in head or not _utf8(head):
            return [spec]  # a video (binary), given directly
        return _read_list(p)
    if glob.has_magic(spec):
        found = sorted(f for f in glob.glob(spec, recursive=True) if os.path.isfile(f))
        if not found:
            raise BatchInputNotFoundError(message(
                "cpllm batch", "a glob matching video files", f"{spec!r}, which matches none",
                "check the pattern (quote it so that the shell leaves it to cpllm)"))
        return found
    raise BatchInputNotFoundError(message(
        "cpllm batch", "an input list, a JSONL manifest, a glob or a video file",
        f"{spec!r}, which does not exist", "check the path"))


def _utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut at the end of the head
    return True


def _read_list(p: Path) -> list[str]:
    lines = [(i, s.strip()) for i, s in enumerate(p.read_text("utf-8").splitlines(), 1)]
    lines = [(i, s) for i, s in lines if s and not s.startswith("#")]
    manifest = bool(lines) and lines[0][1].startswith("{")
    out = []
    for i, s in lines:
        path = _manifest_path(p, i, s) if manifest else s
        out.append(path if os.path.isabs(path) else str(p.parent / path))
    return out


def _manifest_path(p: Path, line: int, text: str) -> str:
    try:
        row = json.loads(text)
    except ValueError as exc:
        raise BatchInputError(message(
            f"cpllm batch: {p}, line {line}", "a JSON object with a 'path' field",
            f"invalid JSON ({exc})", "write one JSON object per line")) from None
    if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not row["path"]:
        raise BatchInputError(message(
            f"cpllm batch: {p}, line {line}", "a JSON object with a 'path' field (a string)",
            text[:80], 'add "path": "videos/a.mp4" to every line'))
    return row["path"]


def _identity(path: str) -> str:
    """The input's content identity; a path that cannot be read is known by its name."""
    from .integrations.ladder import identity

    try:
        return identity(path)
    except OSError:
        return f"path:{os.path.abspath(path)}"


# --- jobs ---------------------------------------------------------------------------------


class Job(Protocol):
    """What a worker runs: picklable, loaded once per worker, then called once per input."""

    def options(self) -> dict:
        """The options that decide a row (JSON-ready): part of the resume key."""

    def load(self, cpus: int) -> str:
        """Load the model with ``cpus`` threads; return the model id."""

    def __call__(self, path: str) -> dict:
        """The row of one input (raise on failure: the worker turns it into an error row)."""


def _threaded(backend: Any, model: str, cpus: int) -> Any:
    """``backend`` with ``cpus`` ONNX Runtime threads where it is, or resolves to, ONNX
    Runtime; other backends as given."""
    from . import backends
    from .configs import packaged

    if isinstance(backend, backends.ORT):
        return dataclasses.replace(backend, threads=cpus)
    if backend == "auto":
        try:
            backend = backends.resolve(packaged(str(model)) or model)
        except CpllmError:
            return "auto"  # load_model raises the full error
    return backends.ORT(threads=cpus) if backend == "onnxruntime" else backend


@dataclasses.dataclass
class ScoreJob:
    """``cpllm score`` of each input (arguments as its options)."""

    model: str = "cpllm-lite"
    backend: str = "auto"
    precision: str = "fp32"
    key_frames: int | None = None

    def __post_init__(self):
        from .backends import choose

        choose(self.backend, self.precision)  # a bad pair fails here, not in every worker
        self._model = None

    def options(self) -> dict:
        return {"job": "score", "backend": self.backend, "precision": self.precision,
                "key_frames": self.key_frames}

    def load(self, cpus: int) -> str:
        from . import api
        from .backends import choose

        self._model = api.load_model(
            self.model, _threaded(choose(self.backend, self.precision), self.model, cpus))
        return self._model.id

    def __call__(self, path: str) -> dict:
        from . import api
        from .cli import score_row

        return score_row(path, api.score(path, model=self._model, key_frames=self.key_frames))


@dataclasses.dataclass
class PickJob:
    """``cpllm-ladder pick`` of each input; ``kw``: the values of its options
    (:func:`cpllm_plugin.integrations.cli.pick_options`)."""

    kw: dict

    @classmethod
    def make(cls, **kw) -> PickJob:
        """A pick job from keyword options named as ``pick_options`` passes them
        (``min_score=3.5, preset="fast"``); the others take their command-line defaults."""
        from .integrations.cli import pick_options

        ctx = click.command()(pick_options(lambda **_: None)).make_context("pick", [])
        unknown = sorted(set(kw) - set(ctx.params))
        if unknown:
            raise BatchArgumentError(message(
                "PickJob.make()", f"options among {sorted(ctx.params)}", f"{unknown}",
                "use the names cpllm-ladder pick's options have in Python (--min-score: "
                "min_score)"))
        return cls({**ctx.params, **kw})

    def __post_init__(self):
        from .integrations import ladder as lad

        if self.kw.get("min_score") is not None and self.kw.get("min_vmaf") is not None:
            raise lad.LadderArgumentError(message(
                "cpllm batch pick", "one of --min-score and --min-vmaf", "both",
                "give the target once"))
        lad.Settings(self.kw["encoder"]).table  # noqa: B018 - checks the encoder name now
        self._options = self._scorer = None

    def options(self) -> dict:
        out = {"job": "pick"}
        for k, v in sorted(self.kw.items()):
            if k not in PICK_OPTIONS_NOT_IN_KEY:
                out[k] = json.loads(json.dumps(v, default=str))  # tuples -> lists, Path -> str
        return out

    def load(self, cpus: int) -> str:
        from .integrations import ladder as lad

        backend = _threaded(self.kw["backend"], self.kw["model"], cpus)
        self._options = lad.PickOptions.from_flags({**self.kw, "backend": backend})
        self._scorer = lad.Scorer(self.kw["model"], backend)  # loaded once; every pick reuses it
        return self._scorer.id

    def __call__(self, path: str) -> dict:
        from .integrations import ladder as lad

        return lad.Job(path, self._options, self._scorer, where="cpllm batch pick").pick().row(
            path)


def error_row(path: str, error: str, text: str) -> dict:
    """The row of a failed input (the shape of ``cpllm-ladder --json`` errors, plus path)."""
    return {"type": "error", "path": path, "error": error, "message": text}


# --- workers ------------------------------------------------------------------------------


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
    ff = sys.modules.get("cpllm_plugin.integrations.ffmpeg")
    if ff is not None:
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


class _Local:
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


class _Ray:
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


# --- output -------------------------------------------------------------------------------


class _Output:
    """The output JSONL: rows already there (by key), appends flushed one row at a time.

    Held under an exclusive lock so that two batches never write one file.
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, dict] = {}  # key -> latest row
        self.seen: set[tuple[str, str]] = set()  # (key, path) with a row
        self.foreign = 0
        self._open()
        self.f.seek(0)
        text = self.f.read()
        for line in text.splitlines():
            row = _parse(line)
            if row is None:
                self.foreign += 1  # not ours, or the last line of a killed run, cut short
                continue
            self.rows[row["batch"]["key"]] = row
            self.seen.add((row["batch"]["key"], row["path"]))
        if text and not text.endswith("\n"):
            self.f.write("\n")  # after a line cut short, new rows start on their own line
            self.f.flush()

    def _open(self) -> None:
        self.f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.f.close()
            raise OutputLockedError(message(
                "cpllm batch -o", "an output no other batch is writing",
                f"{self.path}, locked by a running batch", "wait for it, or choose another "
                "output")) from None

    def drop_errors(self, keys: set[str]) -> None:
        """Remove the error rows of ``keys`` (about to be redone): written to a new file that
        replaces the old one, so a crash leaves either file whole."""
        if not any(self.rows.get(k, {}).get("type") == "error" for k in keys):
            return
        self.f.seek(0)
        keep = [line for line in self.f.read().splitlines()
                if not ((r := _parse(line)) and r["type"] == "error" and r["batch"]["key"] in keys)]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        with open(tmp, "w", encoding="utf-8") as t:
            t.write("".join(line + "\n" for line in keep if line.strip()))
            t.flush()
            os.fsync(t.fileno())
        os.replace(tmp, self.path)
        self.f.close()
        self._open()
        self.seen = {(k, p) for k, p in self.seen if k not in keys}
        for k in keys:
            if self.rows.get(k, {}).get("type") == "error":
                del self.rows[k]

    def write(self, row: dict) -> None:
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()  # one row at a time: a crash loses no finished input

    def close(self) -> None:
        self.f.close()


def _parse(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    ok = (isinstance(row, dict) and isinstance(row.get("batch"), dict)
          and isinstance(row["batch"].get("key"), str) and isinstance(row.get("path"), str)
          and "type" in row)
    return row if ok else None


# --- progress and summary -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Summary:
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
                f"({failed} failed)  {rate:.1f} videos/min  ETA {_clock(eta)}")
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"


# --- the driver ---------------------------------------------------------------------------


def run(inputs: str | os.PathLike | Iterable[str | os.PathLike], output: str | os.PathLike,
        job: Job, *, workers: int | None = None, ray: str | None = None,
        num_cpus: float = 1, num_gpus: float = 0, retry_failed: bool = False,
        quiet: bool = False, on_row: Callable[[dict], None] | None = None) -> Summary:
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
        The :class:`Summary` (``failed`` counts error rows written by this run).

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
    sink = _Output(Path(output))
    try:
        with ThreadPoolExecutor(8) as io:  # identities read while the workers load
            idents = io.map(_identity, paths)
            if ray is None:
                cpus = max(1, int(num_cpus))
                from .integrations.ffmpeg import cpus as cores

                pool = _Local(job, workers or max(1, int(cores() // num_cpus)), cpus)
            else:
                pool = _Ray(job, workers, num_cpus, num_gpus, ray)
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
    return Summary(d.done, d.failed, d.skipped, d.retried, round(time.monotonic() - t0, 3),
                   str(output), d.failed_before)


class _Driver:
    """Hands inputs to idle workers and writes their rows; replaces dead workers."""

    def __init__(self, pool, job: Job, sink: _Output, quiet: bool, on_row):
        self.pool, self.job, self.sink, self.quiet, self.on_row = pool, job, sink, quiet, on_row
        self.model_id: str | None = None
        self.ready: set[int] = set()
        self.busy: dict[int, tuple[str, int]] = {}  # worker -> (key, attempt)
        self.queue: collections.deque[tuple[str, int]] = collections.deque()
        self.todo: dict[str, list[str]] = {}  # key -> paths with that content
        self.done = self.failed = self.skipped = self.retried = self.early_deaths = 0
        self.failed_before = 0  # skipped inputs whose row is an error
        self.progress: _Progress | None = None

    def say(self, line: str) -> None:
        if not self.quiet:
            click.echo(f"cpllm batch: {line}", err=True)

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


# --- the command line ---------------------------------------------------------------------


def _options(f):
    """The options of every batch job: inputs, output, workers, Ray, resume."""
    opts = [
        click.argument("inputs", nargs=-1, required=True),
        click.option("-o", "--output", required=True,
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="JSONL file rows are appended to; a rerun resumes it."),
        click.option("-j", "--workers", type=click.IntRange(min=1),
                     help="Workers (default: one per --num-cpus cores here, or as many as "
                     "the Ray cluster holds)."),
        click.option("--ray", "ray_address", metavar="ADDRESS", envvar="CPLLM_RAY",
                     help="Run on Ray: 'auto' (a running cluster, else a local instance), "
                     "'ray://HEAD:10001' or HOST:PORT (env CPLLM_RAY)."),
        click.option("--num-cpus", type=click.FloatRange(0, min_open=True), default=1.0,
                     show_default=True, help="CPUs per worker; ONNX Runtime runs this many "
                     "threads in it."),
        click.option("--num-gpus", type=click.FloatRange(0), default=0.0, show_default=True,
                     help="GPUs per Ray worker (0.25: four workers share a GPU)."),
        click.option("--retry-failed", is_flag=True,
                     help="Redo inputs whose row in OUTPUT is an error."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _go(job_fn: Callable[[], Job], inputs, output, workers, ray_address, num_cpus,
        num_gpus, retry_failed, quiet, as_json) -> None:
    """Run a batch from the command line: exit 0 every input has a result row, 1 some have an
    error row (now or from before) or a named error stopped the batch, 130 interrupted
    (rows written so far stay; a rerun resumes)."""
    def term(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, term)
    try:
        summary = run(inputs, output, job_fn(), workers=workers, ray=ray_address,
                      num_cpus=num_cpus, num_gpus=num_gpus, retry_failed=retry_failed,
                      quiet=quiet,
                      on_row=(lambda r: click.echo(json.dumps(r))) if as_json else None)
    except KeyboardInterrupt:
        click.echo(f"cpllm batch: interrupted; the rows in {output} are kept, run the same "
                   "command again to resume", err=True)
        sys.exit(130)
    except CpllmError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGTERM, old)
    click.echo(summary.line(), err=True)
    if not summary.complete:
        sys.exit(1)


def group(score_options: Callable) -> click.Group:
    """The ``cpllm batch`` command group.

    Args:
        score_options: the decorator adding ``cpllm score``'s options (defined once in
            :mod:`cpllm_plugin.cli`, which passes it here); ``pick`` takes
            :func:`cpllm_plugin.integrations.cli.pick_options`.
    """
    from .integrations.cli import pick_options

    @click.group("batch")
    def batch():
        """Score or pick CRFs for many videos: local processes or Ray, resumable.

        INPUTS: a text file of paths, a JSONL manifest with "path", a glob, or videos.
        One JSON row per input is appended to OUTPUT as it finishes; a rerun skips inputs
        already there. Progress and the summary go to stderr; --json also prints the rows.
        """

    @batch.command("score")
    @_options
    @score_options
    @click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
    def score_cmd(inputs, output, workers, ray_address, num_cpus, num_gpus, retry_failed,
                  model, backend, precision, key_frames, as_json, quiet):
        """Score each input (rows as cpllm score --json)."""
        _go(lambda: ScoreJob(model, backend, precision, key_frames), inputs, output,
            workers, ray_address, num_cpus, num_gpus, retry_failed, quiet, as_json)

    @batch.command("pick")
    @_options
    @pick_options
    def pick_cmd(inputs, output, workers, ray_address, num_cpus, num_gpus, retry_failed,
                 **kw):
        """Pick a CRF for each input (rows as cpllm-ladder pick --json, probes embedded)."""
        _go(lambda: PickJob(kw), inputs, output, workers, ray_address, num_cpus, num_gpus,
            retry_failed, kw["quiet"], kw["as_json"])

    return batch
