"""The manifest: one JSON object per line, one line per video (an original or a variant).

    {"path": "variants/coffee/libx264_crf23.mp4", "source": "coffee", "split": "train",
     "original": false, "codec": "libx264", "crf": 23, "vmaf": 91.2, "psnr": 40.1,
     "pseudo": 4.37, "sha256": "...", "description": null}

Paths are relative to the manifest's folder unless absolute. Splits are by source, never by
variant. Scores are on 1-5: ``mos`` is a real opinion score mapped from ``mos_scale``;
``pseudo`` is derived (from the source's MOS and/or VMAF, see ``cpllm_plugin.training.variants``).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from cpllm_plugin.errors import CpllmError, message
from cpllm_plugin.files import write_atomic
from cpllm_plugin.integrations.ffmpeg import CRF_LEVELS  # noqa: F401  (re-exported)


class ManifestError(CpllmError, ValueError):
    """A manifest line is malformed or refers to a missing file."""


@dataclass
class Item:
    """One video of a training or evaluation set.

    Attributes:
        path: the video file (relative to the manifest folder, or absolute).
        source: id of the original this video is, or derives from.
        split: ``"train"``, ``"dev"`` or ``"test"``; the same for every video of a source.
        original: True for the source itself, False for a compressed variant.
        codec, crf: how a variant was encoded (None for originals).
        mos: real mean opinion score, mapped to 1-5.
        mos_raw, mos_scale: the MOS as published and its (low, high) scale.
        pseudo: a derived score on 1-5 for videos without their own MOS.
        vmaf, psnr: full-reference metrics of a variant against its source.
        description: three-sentence description for the text loss.
        description_generated: True when built from metadata rather than written by an
            annotator (a person or a multimodal LLM).
        tag: a content tag (for example "coffee"), used by generated descriptions.
        sha256: of the file; variants with equal hashes are identical encodes.
        reference: the clean video this row's full-reference metrics are measured against,
            when that is not its own original: set on a degraded original (made from a
            clean parent by blurring, rescaling, noise or an earlier low-bitrate encode) and
            on that original's variants, so their VMAF and pseudo-score say absolute quality
            (a blurry original is not excellent). Path as ``path``.
        height: the video's display height in pixels (for per-resolution reports).
    """

    path: str
    source: str
    split: str = "train"
    original: bool = True
    codec: str | None = None
    crf: int | None = None
    mos: float | None = None
    mos_raw: float | None = None
    mos_scale: tuple[float, float] | None = None
    pseudo: float | None = None
    vmaf: float | None = None
    psnr: float | None = None
    description: str | None = None
    description_generated: bool = False
    tag: str | None = None
    sha256: str | None = None
    reference: str | None = None
    height: int | None = None

    @property
    def target(self) -> float | None:
        """The score the regression loss uses: the real MOS, else the pseudo-score, else None."""
        return self.mos if self.mos is not None else self.pseudo

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def map_scale(value: float, scale: tuple[float, float]) -> float:
    """Map a score on ``scale`` (low, high) linearly to 1-5."""
    lo, hi = scale
    return 1.0 + 4.0 * (value - lo) / (hi - lo)


def resolve(manifest: str | Path, item: Item) -> Path:
    """The file of ``item``, resolving relative paths against the manifest's folder."""
    p = Path(item.path)
    return p if p.is_absolute() else Path(manifest).parent / p


def fold_of(source: str, folds: int) -> int:
    """The fold (0 .. ``folds`` - 1) a source falls in, fixed by its name: every video of a
    source, its degraded originals (``parent__kind``) with it, and every tool that splits by
    source puts it in the same one."""
    import hashlib

    root = source.split("__")[0]
    return int(hashlib.sha256(root.encode()).hexdigest(), 16) % folds


def parse_fold(value: str | tuple[int, int]) -> tuple[int, int]:
    """Fold K of N, from ``"K/N"`` or ``(k, n)``; ValueError unless 0 <= K < N and N >= 2."""
    try:
        k, n = (int(v) for v in (value.split("/") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        k = n = None
    if k is None or not (n >= 2 and 0 <= k < n):
        raise ValueError(f"expected fold K/N with 0 <= K < N and N >= 2, such as 0/2, "
                         f"got {value!r}")
    return k, n


def read_manifest(path: str | Path) -> list[Item]:
    """Read a JSONL manifest; unknown keys are ignored with a warning."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(message(
            f"read_manifest({str(path)!r})", "a JSONL manifest file", "no such file",
            "make one with cpllm-variants or write it by hand (see training/manifest.py)"))
    known = {f.name for f in dataclasses.fields(Item)}
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(message(where, "one JSON object per line", str(exc),
                                        "fix or delete that line")) from None
        if not isinstance(data, dict) or "path" not in data or "source" not in data:
            raise ManifestError(message(where, "an object with at least 'path' and 'source'",
                                        line[:80], "add the missing keys"))
        extra = set(data) - known
        if extra:
            warnings.warn(f"{where}: ignoring unknown keys {sorted(extra)}", stacklevel=2)
        if data.get("mos_scale") is not None:
            data["mos_scale"] = tuple(data["mos_scale"])
        items.append(Item(**{k: v for k, v in data.items() if k in known}))
    check_splits(items, str(path))
    return items


def write_manifest(path: str | Path, items: list[Item]) -> Path:
    """Write items as JSONL (atomically: a crash never leaves half a manifest)."""
    path = Path(path)
    check_splits(items, str(path))
    return write_atomic(path, "".join(json.dumps(i.to_dict(), sort_keys=True) + "\n"
                                      for i in items))


def check_splits(items: list[Item], where: str) -> None:
    """Refuse a source whose videos sit in different splits (that would leak)."""
    seen: dict[str, str] = {}
    for i in items:
        if seen.setdefault(i.source, i.split) != i.split:
            raise ManifestError(message(
                where, f"every video of source {i.source!r} in one split",
                f"both {seen[i.source]!r} and {i.split!r}", "split by source, never by variant"))
