"""cpllm batch: rows equal to the single-video commands, failure isolation, resume after a
killed driver, dead workers retried; on local processes and on a local Ray instance.

Six clips (320x180, 1 s) cut from the sample, one of them corrupt; 2 key frames each.
"""

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import cpllm_plugin
from cpllm_plugin.errors import MissingExtraError
from cpllm_plugin.integrations import batch
from cpllm_plugin.integrations import ladder as lad
from cpllm_plugin.integrations.batch.driver import _Progress
from cpllm_plugin.integrations.batch.output import parse_row
from cpllm_plugin.integrations.cli import main as ladder_main
from cpllm_plugin.integrations.cli import pick_options
from cpllm_plugin.integrations.commands import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "sample.mp4"
KF = "2"  # key frames per clip: enough to compare, fast on 2 cores
PICK = ["--min-score", "3.5", "--preset", "ultrafast", "--key-frames", KF, "--max-probes", "2"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory, ffmpeg_exe):
    """Six clips, the fourth corrupt (the head of another), and ``list.txt`` naming them."""
    d = tmp_path_factory.mktemp("clips")
    paths = []
    for i in range(5):
        p = d / f"clip{i}.mp4"
        subprocess.run([ffmpeg_exe, "-v", "error", "-y", "-ss", f"{0.5 * i:.1f}", "-t", "1",
                        "-i", str(SAMPLE), "-vf", "scale=320:180", "-c:v", "libx264",
                        "-preset", "ultrafast", "-crf", str(18 + 6 * i), str(p)], check=True)
        paths.append(p)
    bad = d / "corrupt.mp4"
    bad.write_bytes(paths[0].read_bytes()[:4000])
    paths.insert(3, bad)
    (d / "list.txt").write_text("# six clips\n" + "".join(f"{p.name}\n" for p in paths))
    return paths


@pytest.fixture(scope="module")
def single(clips):
    """``cpllm score --json`` rows of the good clips (one process), and the corrupt clip's
    error class from the Python API."""
    good = [str(p) for p in clips if p.name != "corrupt.mp4"]
    r = CliRunner().invoke(main, ["score", *good, "-k", KF, "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["path"]: row for row in map(json.loads, r.stdout.splitlines())}
    with pytest.raises(cpllm_plugin.CpllmError) as err:
        cpllm_plugin.score(str(clips[3]))
    return rows, type(err.value).__name__


def rows_of(path: Path) -> list[dict]:
    return [r for r in map(parse_row, path.read_text().splitlines()) if r]


def check_scores(rows: list[dict], clips, single) -> None:
    """One row per clip: five equal to the single-process rows, one error row."""
    want, error = single
    assert sorted(r["path"] for r in rows) == sorted(map(str, clips))
    for r in rows:
        if r["path"] not in want:
            assert (r["type"], r["error"]) == ("error", error)
            assert r["message"].startswith("read_key_frames(") and "Fix:" in r["message"]
            continue
        got, exp = {k: v for k, v in r.items() if k != "batch"}, want[r["path"]]
        assert list(got) == list(exp)
        assert got["score"] == pytest.approx(exp["score"], abs=1e-5)
        assert got["frame_scores"] == pytest.approx(exp["frame_scores"], abs=1e-5)
        for k in ("frame_indices", "timestamps", "model", "backend"):
            assert got[k] == exp[k]


# --- local worker processes ---------------------------------------------------------------


def test_local_score_rows_match_single_and_resume(clips, single, tmp_path):
    out = tmp_path / "scores.jsonl"
    args = ["batch", "score", str(clips[0].parent / "list.txt"), "-o", str(out), "-k", KF,
            "-j", "2"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output  # one input failed
    assert "5 done, 1 failed, 0 skipped" in r.stderr
    rows = rows_of(out)
    check_scores(rows, clips, single)
    assert {r["batch"]["attempts"] for r in rows} == {1}

    # A driver killed while writing leaves half a line; a rerun ignores it, skips the rest,
    # copies the row of content already done, and prints rows with --json.
    with open(out, "a") as f:
        f.write('{"type": "score", "pa')
    twin = tmp_path / "twin.mp4"
    twin.write_bytes(clips[0].read_bytes())
    r = CliRunner().invoke(main, [*args, str(twin), "--json"])
    assert "0 done, 0 failed, 7 skipped (1 failed before" in r.stderr
    assert r.exit_code == 1
    copy = json.loads(r.stdout)
    assert copy["path"] == str(twin) and copy["batch"]["copy_of"] == str(clips[0])
    assert copy["score"] == next(x for x in rows if x["path"] == str(clips[0]))["score"]

    r = CliRunner().invoke(main, [*args, "--retry-failed", "-q"])
    assert "0 done, 1 failed, 5 skipped" in r.stderr
    rows = rows_of(out)
    assert sorted(x["path"] for x in rows) == sorted(map(str, [*clips, twin]))  # once each


class Crashy:
    """A job whose worker dies on ``poison*`` inputs always and on ``once*`` inputs the first
    time (a marker file remembers it)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def options(self):
        return {"job": "crashy"}

    def load(self, cpus):
        return "crashy@0"

    def __call__(self, path):
        name = Path(path).name
        if name.startswith("once") and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if name.startswith("poison"):
            os.kill(os.getpid(), signal.SIGKILL)
        return {"type": "echo", "path": path}


def test_local_dead_worker_retried_once_then_failed(tmp_path):
    inputs = []
    for name in ("ok.bin", "once.bin", "poison.bin"):
        (tmp_path / name).write_bytes(b"\0" + name.encode())  # contents differ
        inputs.append(str(tmp_path / name))
    out = tmp_path / "out.jsonl"
    s = batch.run(inputs, out, Crashy(tmp_path / "died"), workers=2, quiet=True)
    rows = {Path(r["path"]).name: r for r in rows_of(out)}
    assert (rows["ok.bin"]["type"], rows["ok.bin"]["batch"]["attempts"]) == ("echo", 1)
    assert (rows["once.bin"]["type"], rows["once.bin"]["batch"]["attempts"]) == ("echo", 2)
    assert rows["poison.bin"]["error"] == "WorkerDiedError"
    assert rows["poison.bin"]["batch"]["attempts"] == 2
    assert "2 workers died on" in rows["poison.bin"]["message"]
    assert "killed by signal 9" in rows["poison.bin"]["message"]
    assert (s.done, s.failed, s.retried) == (2, 1, 2)


def test_local_pick_rows_match_single(clips, tmp_path):
    good = [clips[4]]
    out = tmp_path / "picks.jsonl"
    r = CliRunner().invoke(main, ["batch", "pick", *map(str, good), str(clips[3]), "-o",
                                  str(out), "--no-cache", *PICK])
    assert r.exit_code == 1 and "1 done, 1 failed" in r.stderr, r.output
    rows = {x["path"]: x for x in rows_of(out)}
    assert rows[str(clips[3])]["error"] == "VideoDecodeError"
    # x264's output depends on its thread count, which the ladder takes from the cores it
    # may use: the single-process pick runs on one core, as each batch worker does.
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        singles = [CliRunner().invoke(ladder_main, ["pick", str(c), "--json", "--no-cache",
                                                    "-q", *PICK]) for c in good]
    finally:
        os.sched_setaffinity(0, cores)
    for clip, one in zip(good, singles, strict=True):
        assert one.exit_code == 0, one.output
        lines = [json.loads(x) for x in one.stdout.splitlines()]
        want = {**lines[-1], "path": str(clip), "probes": lines[:-1]}
        got = {k: v for k, v in rows[str(clip)].items() if k != "batch"}
        assert list(got) == ["type", "path", *list(lines[-1])[1:], "probes"]
        for p in got["probes"] + want["probes"]:
            del p["seconds"]  # wall time of each probe
        assert same(got, want)


def same(a, b, tol=1e-5) -> bool:
    """Equal, floats within ``tol``."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            same(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(
            map(same, a, b, [tol] * len(a)))
    if isinstance(a, float):
        return isinstance(b, (int, float)) and abs(a - b) <= tol
    return a == b


# --- inputs and options -------------------------------------------------------------------


def test_read_inputs_list_manifest_glob_and_videos(tmp_path, clips):
    d = tmp_path / "sub"
    d.mkdir()
    (d / "a.txt").write_text("# comment\n\n../x.mp4\n/abs/y.mp4\n../x.mp4\n")
    (d / "m.jsonl").write_text('{"path": "z.mp4", "id": 1}\n{"path": "/abs/w.mp4"}\n')
    assert batch.read_inputs(d / "a.txt") == [str(d / "../x.mp4"), "/abs/y.mp4"]
    assert batch.read_inputs(str(d / "m.jsonl")) == [str(d / "z.mp4"), "/abs/w.mp4"]
    folder = clips[0].parent
    assert batch.read_inputs(str(folder / "clip*.mp4")) == [str(p) for p in sorted(
        folder.glob("clip*.mp4"))]
    assert batch.read_inputs([clips[0], str(clips[1])]) == [str(clips[0]), str(clips[1])]


@pytest.mark.parametrize("name, text, error, words", [
    ("missing.txt", None, batch.BatchInputNotFoundError, "does not exist"),
    ("none-*.mp4", None, batch.BatchInputNotFoundError, "matches none"),
    ("empty.txt", "# nothing\n\n", batch.BatchInputError, "at least one input"),
    ("m.jsonl", '{"path": "a.mp4"}\n{"file": "b.mp4"}\n', batch.BatchInputError, "line 2"),
    ("bad.jsonl", '{"path": "a.mp4"}\n{"path": \n', batch.BatchInputError, "invalid JSON"),
])
def test_read_inputs_bad(tmp_path, name, text, error, words):
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(error, match="cpllm batch") as e:
        batch.read_inputs(str(tmp_path / name))
    assert words in str(e.value) and "Fix:" in str(e.value)


@pytest.mark.parametrize("kw, error, words", [
    ({"num_gpus": 1}, batch.BatchArgumentError, "--ray"),
    ({"num_cpus": 0}, batch.BatchArgumentError, "num_cpus > 0"),
    ({"workers": 0}, batch.BatchArgumentError, "workers >= 1"),
])
def test_run_bad_options(tmp_path, clips, kw, error, words):
    with pytest.raises(error, match=words):
        batch.run([str(clips[0])], tmp_path / "o.jsonl", Crashy(tmp_path / "m"), **kw)


def test_job_bad_options():
    with pytest.raises(lad.LadderArgumentError, match="one of --min-score and --min-vmaf"):
        batch.PickJob.make(min_score=3.0, min_vmaf=90.0)
    with pytest.raises(batch.BatchArgumentError, match="min_scor"):
        batch.PickJob.make(min_scor=3.0)
    with pytest.raises(cpllm_plugin.CpllmError, match="int8"):
        batch.ScoreJob(backend="torch", precision="int8")
    r = CliRunner().invoke(main, ["batch", "score", "x.txt", "-o", "o.jsonl", "--num-cpus", "0"])
    assert r.exit_code == 2


def test_pick_defaults_are_the_command_lines(monkeypatch):
    # PickJob.make builds its defaults without click: they must stay what cpllm-ladder pick's
    # options give, or the resume keys of Python and command-line batches would differ.
    import click

    monkeypatch.delenv("CPLLM_FFMPEG", raising=False)
    ctx = click.command()(pick_options(lambda **_: None)).make_context("pick", [])
    assert batch.pick_defaults() == ctx.params
    assert batch.PickJob.make().options() == batch.PickJob(ctx.params).options()


def test_cpllm_is_the_runtime_with_batch():
    from cpllm_plugin import cli

    assert "batch" not in cli.main.commands
    assert main.commands == {**cli.main.commands, "batch": main.commands["batch"]}
    assert sorted(main.commands["batch"].commands) == ["pick", "score"]


def test_output_locked(tmp_path, clips):
    out = tmp_path / "o.jsonl"
    with open(out, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(batch.OutputLockedError, match="locked by a running batch"):
            batch.run([str(clips[0])], out, Crashy(tmp_path / "m"))


def test_ray_missing_names_the_extra(tmp_path, clips, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'cpllm-plugin\[ray\]'"):
        batch.run([str(clips[0])], tmp_path / "o.jsonl", Crashy(tmp_path / "m"), ray="auto")


def test_progress_line():
    import io

    buf = io.StringIO()
    p = _Progress(4, quiet=False, stream=buf)
    p.t0 -= 60  # one minute in
    p.show(2, 1)
    assert "[##########..........] 2/4 (1 failed)  2.0 videos/min  ETA 1:00" in buf.getvalue()


# --- Ray ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance with 2 CPUs for this module; its GCS address."""
    ray = pytest.importorskip("ray", exc_type=ImportError)  # missing or broken: skip
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning",
             object_store_memory=100 * 2**20)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_ray_score_rows_match_single(ray_address, clips, single, tmp_path):
    out = tmp_path / "scores.jsonl"
    s = batch.run(clips[0].parent / "list.txt", out, batch.ScoreJob(key_frames=int(KF)),
                  ray="auto", workers=2, quiet=True)
    assert (s.done, s.failed, s.skipped) == (5, 1, 0)
    check_scores(rows_of(out), clips, single)


def test_ray_driver_killed_then_resumed(ray_address, clips, tmp_path):
    out = tmp_path / "scores.jsonl"
    cmd = [sys.executable, "-m", "cpllm_plugin.integrations.commands", "batch", "score",
           str(clips[0].parent / "list.txt"), "-o", str(out), "-k", KF, "--ray", ray_address,
           "-j", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out.exists() and rows_of(out)) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {r["path"]: r for r in rows_of(out)}
    assert 1 <= len(first) < len(clips)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert f"{len(first)} skipped" in done.stderr, done.stderr
    rows = rows_of(out)
    assert sorted(r["path"] for r in rows) == sorted(map(str, clips))  # each exactly once
    for r in rows:
        if r["path"] in first:
            assert r == first[r["path"]]  # kept, not redone


def test_ray_worker_killed_mid_task_is_retried(ray_address, clips, single, tmp_path):
    out = tmp_path / "scores.jsonl"
    result = {}

    def go():
        result["summary"] = batch.run(clips[0].parent / "list.txt", out,
                                      batch.ScoreJob(key_frames=int(KF)), ray="auto",
                                      workers=2, quiet=True)

    t = threading.Thread(target=go)
    t.start()
    killed = None
    while killed is None and t.is_alive():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::BatchWorker.run"):  # an actor inside run(path)
                os.kill(int(pid), signal.SIGKILL)
                killed = int(pid)
                break
        time.sleep(0.01)
    t.join(180)
    assert killed is not None
    s = result["summary"]
    assert (s.done + s.failed, s.retried) == (6, 1)
    rows = rows_of(out)
    check_scores(rows, clips, single)
    again = [r for r in rows if r["batch"]["attempts"] == 2]
    assert len(again) == 1 and again[0].get("error") != "WorkerDiedError"
    assert again[0]["batch"]["worker"].split(":")[-1] != str(killed)


def test_ray_pick_row(ray_address, clips, tmp_path):
    out = tmp_path / "picks.jsonl"
    job = batch.PickJob.make(min_score=3.5, preset="ultrafast", key_frames=int(KF),
                             max_probes=2, no_cache=True)
    s = batch.run([str(clips[1])], out, job, ray="auto", workers=1, quiet=True)
    (row,) = rows_of(out)
    assert (s.done, row["type"], row["path"]) == (1, "pick", str(clips[1]))
    assert row["encodes"] == len(row["probes"]) == 2 and row["crf"] in [p["crf"] for p in
                                                                        row["probes"]]
