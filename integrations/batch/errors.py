"""The batch's named errors (one module, so that every part raises the same classes)."""

from cpllm_plugin.errors import CpllmError


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
