"""The output JSONL: one row per input, appended and flushed as each finishes; the rows
already there are what a rerun resumes from."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

from cpllm_plugin.errors import message
from cpllm_plugin.files import write_atomic

from .errors import OutputLockedError


class Output:
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
            row = parse_row(line)
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
                if not ((r := parse_row(line)) and r["type"] == "error"
                        and r["batch"]["key"] in keys)]
        write_atomic(self.path, "".join(line + "\n" for line in keep if line.strip()),
                     fsync=True)
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


def parse_row(line: str) -> dict | None:
    """A batch row, or None for a line that is not one (foreign, or cut short)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    ok = (isinstance(row, dict) and isinstance(row.get("batch"), dict)
          and isinstance(row["batch"].get("key"), str) and isinstance(row.get("path"), str)
          and "type" in row)
    return row if ok else None
