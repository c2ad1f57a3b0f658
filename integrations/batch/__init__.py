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

Parts: :mod:`.inputs` (what to run), :mod:`.jobs` (what a worker does per input),
:mod:`.pool` (workers: local processes or Ray), :mod:`.output` (rows, resume) and
:mod:`.driver` (:func:`run`). No click here: the commands are in
:mod:`cpllm_plugin.integrations.batch_cli`.
"""

from .driver import ATTEMPTS, RunSummary, run
from .errors import (
    BatchArgumentError,
    BatchError,
    BatchInputError,
    BatchInputNotFoundError,
    OutputLockedError,
    WorkerDiedError,
    WorkerStartError,
)
from .inputs import read_inputs
from .jobs import Job, PickJob, ScoreJob, error_row, pick_defaults
from .pool import BatchWorker

__all__ = [
    "ATTEMPTS", "BatchArgumentError", "BatchError", "BatchInputError",
    "BatchInputNotFoundError", "BatchWorker", "Job", "OutputLockedError", "PickJob",
    "RunSummary", "ScoreJob", "WorkerDiedError", "WorkerStartError", "error_row",
    "pick_defaults", "read_inputs", "run",
]
