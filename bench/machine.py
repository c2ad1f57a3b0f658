"""What every benchmark prints first: the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def describe() -> dict:
    """CPU model, cores, load, Python and numpy versions, and the thread variables in effect."""
    import numpy

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "numpy": numpy.__version__,
            "threads": {k: os.environ.get(k) for k in THREAD_VARS}}
