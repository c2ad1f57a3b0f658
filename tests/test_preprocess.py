"""Preprocessing: the paper's geometry, the documented rules, and input checks."""

import dataclasses
import functools
import math

import numpy as np
import pytest
import skimage.data
from media import pan_frames
from PIL import Image

from cpllm_plugin import errors
from cpllm_plugin import preprocess as pp
from cpllm_plugin.configs import get_config

CFG = get_config("cpllm-lite")


def boxes_overlap(pos, p):
    for i in range(len(pos)):
        for j in range(i + 1, len(pos)):
            (y1, x1), (y2, x2) = pos[i], pos[j]
            if abs(y1 - y2) < p and abs(x1 - x2) < p:
                return True
    return False


def test_1080p_gives_paper_shapes():
    frame = np.zeros((1080, 1920, 3), np.uint8)
    view, patches = pp.prepare_frame(frame, CFG)
    assert view.shape == (3, 448, 448) and view.dtype == np.float32
    assert patches.shape == (8, 3, 224, 224) and patches.dtype == np.float32
    assert pp.fit_size(1080, 1920, CFG.fit, 224) == (540, 960)
    assert pp.patch_grid(540, 960, 8, 224) == (2, 4)
    pos = pp.patch_positions(540, 960, 8, 224)
    assert not boxes_overlap(pos, 224)
    assert pos.min() >= 0 and (pos[:, 0] + 224).max() <= 540 and (pos[:, 1] + 224).max() <= 960
    # spread over the frame: equal gaps, centred in 4 column cells and 2 row cells
    assert list(pos[:4, 1]) == [8, 248, 488, 728] and list(pos[::4, 0]) == [23, 293]


def test_patches_are_cut_from_the_fitted_frame():
    # A horizontal ramp survives resizing; each patch must match its window of the fit.
    ramp = np.tile(np.linspace(0, 255, 1920).astype(np.uint8), (1080, 1))
    frame = np.stack([ramp, ramp.T[:1080, :1080].repeat(2, 1)[:, :1920], ramp], -1)
    _, patches = pp.prepare_frame(frame, CFG)
    fitted = pp.resize(frame, 540, 960)
    for (y, x), patch in zip(pp.patch_positions(540, 960, 8, 224), patches, strict=True):
        np.testing.assert_array_equal(patch, fitted[y:y + 224, x:x + 224].transpose(2, 0, 1))


def test_portrait_fits_1080_high_540_wide():
    assert pp.fit_size(1920, 1080, CFG.fit, 224) == (960, 540)
    assert pp.patch_grid(960, 540, 8, 224) == (4, 2)
    view, patches = pp.prepare_frame(np.zeros((1920, 1080, 3), np.uint8), CFG)
    assert view.shape == (3, 448, 448) and patches.shape == (8, 3, 224, 224)
    assert not boxes_overlap(pp.patch_positions(960, 540, 8, 224), 224)


@pytest.mark.parametrize("h,w,fit", [
    (480, 640, (540, 720)),   # 4:3 scales up to the fit
    (1080, 1440, (540, 720)),
    (360, 640, (540, 960)),   # small frames scale up: fixed resolution, as in the paper
    (817, 1920, (460, 1080)),  # cinema: long side limits
])
def test_fit_keeps_aspect_ratio(h, w, fit):
    fh, fw = pp.fit_size(h, w, CFG.fit, 224)
    assert (fh, fw) == fit
    assert abs(fh / fw - h / w) < 0.01
    assert fh <= 540 or fw <= 540


def test_4_3_patches_overlap_evenly():
    pos = pp.patch_positions(540, 720, 8, 224)
    xs = sorted(set(pos[:, 1].tolist()))
    assert xs[0] == 0 and xs[-1] == 720 - 224  # edge to edge
    gaps = np.diff(xs)
    assert gaps.max() - gaps.min() <= 1


@pytest.mark.parametrize("h,w", [(1, 1), (16, 16), (100, 2000), (2000, 30), (7, 3)])
def test_tiny_and_thin_frames_follow_the_rule(h, w):
    frame = np.full((h, w, 3), 128, np.uint8)
    fh, fw = pp.fit_size(h, w, CFG.fit, 224)
    assert min(fh, fw) >= 224
    if max(h, w) / min(h, w) > 1080 / 224:  # too thin: short side raised to one patch
        assert min(fh, fw) == 224
    view, patches = pp.prepare_frame(frame, CFG)
    assert view.shape == (3, 448, 448) and patches.shape == (8, 3, 224, 224)
    np.testing.assert_allclose(patches, 128 / 255, atol=1e-5)  # flat stays flat


def test_random_placement_stays_in_cells_and_frame():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        pos = pp.patch_positions(540, 960, 8, 224, rng)
        assert not boxes_overlap(pos, 224)
        assert pos.min() >= 0 and (pos[:, 0] + 224).max() <= 540 and (pos[:, 1] + 224).max() <= 960
        seen.add(tuple(pos.ravel()))
    assert len(seen) > 40


@pytest.mark.parametrize("size", [(448, 448), (200, 300), (700, 900), (540, 960)])
def test_resize_matches_pil_bilinear(size):
    img = skimage.data.astronaut()
    h, w = size
    ref = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR), np.float32)
    mine = pp.resize(img, h, w) * 255
    assert np.abs(mine - ref).max() <= 1.01  # PIL rounds to 8 bits
    assert np.abs(mine - ref).mean() < 0.4


def test_float_and_uint8_frames_agree():
    img = skimage.data.coffee()
    a = pp.resize(img, 448, 448)
    b = pp.resize(img.astype(np.float32) / 255, 448, 448)
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("n,m,expected", [
    (100, 5, [10, 30, 50, 70, 90]),
    (10, 5, [1, 3, 5, 7, 9]),
    (3, 5, [0, 1, 2]),
    (19, 19, list(range(19))),
])
def test_key_frames_uniform(n, m, expected):
    assert pp.key_frame_indices(n, m).tolist() == expected


GOOD = np.zeros((2, 32, 48, 3), np.uint8)


@pytest.mark.parametrize("frames,error,words", [
    (GOOD.astype(np.int32), errors.FrameDtypeError, ["uint8", "int32", "Fix"]),
    (GOOD.astype(np.uint16), errors.FrameDtypeError, ["uint16", "1023"]),
    (GOOD[..., :1], errors.FrameShapeError, ["3 channels", "np.repeat"]),
    (np.zeros((2, 32, 48, 4), np.uint8), errors.FrameShapeError, ["4 channels", "alpha"]),
    (np.zeros((2, 3, 32, 48), np.uint8), errors.FrameShapeError, ["transpose"]),
    (np.zeros((32,), np.uint8), errors.FrameShapeError, ["(N, H, W, 3)"]),
    ([], errors.EmptyInputError, ["empty list"]),
    (GOOD[:0], errors.EmptyInputError, ["at least one frame"]),
    ([GOOD[0], np.zeros((10, 10, 3), np.uint8)], errors.FrameShapeError, ["one size"]),
    (np.full((1, 8, 8, 3), np.nan, np.float32), errors.NonFiniteError, ["NaN", "192"]),
    (np.full((1, 8, 8, 3), 2.0, np.float32), errors.NonFiniteError, ["[0, 1]", "255"]),
    ({"not": "frames"}, errors.FrameDtypeError, ["dict", "numpy array"]),
])
def test_bad_frames_raise_named_errors(frames, error, words):
    with pytest.raises(error) as info:
        pp.as_frames(frames, "score()")
    text = str(info.value)
    assert text.startswith("score(): expected") and "got" in text and "Fix:" in text
    for w in words:
        assert w in text
    assert isinstance(info.value, errors.CpllmError) and isinstance(info.value, ValueError)


# --- equality with the slow reference ------------------------------------------------------
# The gather-per-tap resize that preprocess.py used before its banded-matmul rewrite, kept
# verbatim as the reference: the fast path must give the same numbers up to float rounding.


@functools.lru_cache(maxsize=64)
def ref_taps(n_in, n_out):
    scale = n_in / n_out
    support = max(scale, 1.0)
    centre = (np.arange(n_out) + 0.5) * scale
    first = np.floor(centre - support + 0.5).astype(np.int64)
    idx = first[:, None] + np.arange(int(math.ceil(2 * support)) + 1)[None, :]
    w = np.clip(1.0 - np.abs((idx + 0.5 - centre[:, None]) / support), 0.0, None)
    w[(idx < 0) | (idx >= n_in)] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    used = w.max(axis=0) > 0
    return np.clip(idx, 0, n_in - 1)[:, used], w[:, used].astype(np.float32)


def ref_resize_rows(x, n_out):
    idx, w = ref_taps(x.shape[0], n_out)
    out = w[:, 0, None, None] * x[idx[:, 0]]
    for t in range(1, idx.shape[1]):
        out += w[:, t, None, None] * x[idx[:, t]]
    return out


def ref_resize(img, height, width):
    out = img if img.shape[0] == height else ref_resize_rows(img, height)
    if img.shape[1] != width:
        out = ref_resize_rows(np.ascontiguousarray(out.transpose(1, 0, 2)), width)
        out = out.transpose(1, 0, 2)
    if img.dtype == np.uint8:
        return out * np.float32(1 / 255)
    return out.astype(np.float32, copy=False)


def ref_prepare(frames, geo, rng=None):
    """Views (M, 3, S, S) and patches (M, K, 3, P, P) the old way."""
    views, patches = [], []
    for f in frames:
        views.append(ref_resize(f, geo.view_size, geo.view_size).transpose(2, 0, 1))
        fh, fw = pp.fit_size(*f.shape[:2], tuple(geo.fit), geo.patch_size)
        fitted, p = ref_resize(f, fh, fw), geo.patch_size
        pos = pp.patch_positions(fh, fw, geo.num_patches, p, rng)
        patches.append(np.stack([fitted[y:y + p, x:x + p] for y, x in pos]).transpose(0, 3, 1, 2))
    return np.stack(views), np.stack(patches)


TOL = 1e-5  # float32 rounding on [0, 1] values


def frames_of(kind, h, w, n=2):
    if kind == "photo":
        return pan_frames(n, h, w, "astronaut")
    return np.random.default_rng(h * 7919 + w).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


SIZES = [
    (180, 320),   # upscaled to the fit, shrunk to the view
    (320, 180),   # portrait
    (240, 320),   # 4:3, overlapping patches
    (181, 333),   # odd sizes
    (50, 30), (3, 200), (1, 1),  # tiny and thin: scaled up, too thin for a patch
]


@pytest.mark.parametrize("kind,h,w,dtype", [
    (k, h, w, d) for k in ("photo", "noise") for h, w in SIZES for d in ("uint8", "float32")
] + [("photo", 1080, 1920, "uint8")])  # the common case
def test_prepare_equals_reference(kind, h, w, dtype):
    frames = frames_of(kind, h, w)
    if dtype == "float32":
        frames = frames.astype(np.float32) / 255
    views, patches = ref_prepare(frames, CFG)
    got = pp.prepare(frames, CFG)
    for a, b in ((got.views, views), (got.patches, patches)):
        assert a.dtype == np.float32 and a.flags.c_contiguous and a.shape == b.shape
        assert np.abs(a - b).max() <= TOL
    view, patch = pp.prepare_frame(frames[0], CFG)
    assert np.abs(view - views[0]).max() <= TOL and np.abs(patch - patches[0]).max() <= TOL
    assert np.abs(pp.make_view(frames[1], CFG) - views[1]).max() <= TOL
    assert np.abs(pp.make_patches(frames[1], CFG) - patches[1]).max() <= TOL


def test_random_placement_equals_reference():
    frames = frames_of("photo", 240, 427, n=3)
    views, patches = ref_prepare(frames, CFG, np.random.default_rng(3))
    got = pp.prepare(frames, CFG, np.random.default_rng(3), views=False)
    assert got.views is None
    assert np.abs(got.patches - patches).max() <= TOL  # same positions, same rng draws


@pytest.mark.parametrize("h,w", [(1, 1), (7, 3), (50, 30), (181, 333), (300, 200)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_resize_equals_reference(h, w, dtype):
    img = np.random.default_rng(h + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    if dtype != np.uint8:
        img = img.astype(dtype) / 255
    for oh, ow in [(2 * h + 1, w + 3), (max(1, h // 3), max(1, w // 2)), (h, w), (h, 2 * w),
                   (h + 5, w), (448, 448), (13, 1)]:
        got = pp.resize(img, oh, ow)
        assert got.shape == (oh, ow, 3) and got.dtype == np.float32 and got.flags.c_contiguous
        assert np.abs(got - ref_resize(img, oh, ow)).max() <= TOL


def test_8k_frame_equals_reference():
    # Banded blocks and float32 slabs: an 8K frame is never held in float32 as a whole.
    frame = np.random.default_rng(8).integers(0, 256, (1, 4320, 7680, 3), dtype=np.uint8)
    views, patches = ref_prepare(frame, CFG)
    got = pp.prepare(frame, CFG)
    assert np.abs(got.views - views).max() <= TOL and np.abs(got.patches - patches).max() <= TOL


def test_threaded_prepare_equals_sequential():
    frames = pan_frames(5, 180, 320, photo="coffee")
    one = pp.prepare(frames, CFG)
    many = pp.prepare(frames, CFG, workers=3)
    assert np.array_equal(one.views, many.views) and np.array_equal(one.patches, many.patches)
    # Random placement stays sequential, so a seed gives the same patches either way.
    a = pp.prepare(frames, CFG, np.random.default_rng(7), workers=3)
    b = pp.prepare(frames, CFG, np.random.default_rng(7))
    assert np.array_equal(a.patches, b.patches)


# --- the native low-level input (issue 8): 1080p artifacts reach the pixel encoder ----------

NATIVE = dataclasses.replace(CFG, low_input="native")


@pytest.mark.parametrize("h,w,fitted", [
    ((1080, 1920), None, (1080, 1920)),      # larger than the box: native pixels
    ((1920, 1080), None, (1920, 1080)),      # portrait too
    ((2160, 3840), None, (2160, 3840)),      # 4K: never shrunk
    ((360, 640), None, (540, 960)),          # smaller: scaled up as in the paper's fit
    ((540, 960), None, (540, 960)),
])
def test_native_fit_keeps_large_frames(h, w, fitted):
    del w
    assert pp.fit_size(*h, CFG.fit, 224, "native") == fitted


def test_native_patches_are_native_pixels_spread_over_the_frame():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    view, patches = pp.prepare_frame(frame, NATIVE)
    pos = pp.patch_positions(1080, 1920, 8, 224)
    assert pp.patch_grid(1080, 1920, 8, 224) == (2, 4)
    for (y, x), patch in zip(pos, patches, strict=True):
        np.testing.assert_allclose(patch, frame[y:y + 224, x:x + 224].transpose(2, 0, 1) / 255,
                                   atol=1e-6)
    # spread over the whole frame: the grid's cells span it edge to edge
    assert pos[:, 1].min() < 1920 / 4 and pos[:, 1].max() + 224 > 3 * 1920 / 4
    assert pos[:, 0].min() < 1080 / 2 and pos[:, 0].max() + 224 > 1080 / 2
    # the high-level view is the same whatever the low-level mode
    np.testing.assert_array_equal(view, pp.prepare_frame(frame, CFG)[0])


def test_native_equals_fit_for_small_frames_and_accepts_float():
    frame = (np.random.default_rng(1).random((360, 640, 3))).astype(np.float32)
    a = pp.prepare(frame[None], CFG)
    b = pp.prepare(frame[None], NATIVE)
    np.testing.assert_array_equal(a.patches, b.patches)
    big = np.random.default_rng(2).random((720, 1280, 3)).astype(np.float32)
    p = pp.prepare(big[None], NATIVE).patches[0]
    y, x = pp.patch_positions(720, 1280, 8, 224)[0]
    np.testing.assert_array_equal(p[0], big[y:y + 224, x:x + 224].transpose(2, 0, 1))


def test_native_random_placement_stays_inside_the_frame():
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[::2] = 255
    p = pp.prepare(frame[None], NATIVE, rng=np.random.default_rng(3)).patches
    assert p.shape == (1, 8, 3, 224, 224) and set(np.unique(p)) <= {0.0, 1.0}


@pytest.mark.parametrize("size,fitted", [
    ((120, 160), (224, 299)),      # scaled up only until one patch fits
    ((360, 640), (360, 640)),      # the paper's fit would scale it up to 540x960
    ((1080, 1920), (1080, 1920)),
    ((1280, 720), (1280, 720)),
])
def test_pixels_never_scales_beyond_one_patch(size, fitted):
    assert pp.fit_size(*size, CFG.fit, 224, "pixels") == fitted


def test_pixels_patches_are_native_pixels_of_a_small_frame():
    frame = np.random.default_rng(4).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    patches = pp.prepare(frame[None], dataclasses.replace(CFG, low_input="pixels")).patches[0]
    for (y, x), patch in zip(pp.patch_positions(360, 640, 8, 224), patches, strict=True):
        np.testing.assert_allclose(patch, frame[y:y + 224, x:x + 224].transpose(2, 0, 1) / 255,
                                   atol=1e-6)


def test_unknown_low_input_is_named():
    bad = dataclasses.replace(CFG, low_input="crop")
    with pytest.raises(errors.UnknownNameError, match="'fit' \\(paper\\), 'native' or 'pixels'"):
        bad.validate()


DETAIL = dataclasses.replace(CFG, low_input="pixels", placement="detail")


def _slide(h=1080, w=1920):
    """Flat colour with a 100 x 300 block of text-like strokes near the corner of cell (0, 0)."""
    frame = np.full((h, w, 3), (30, 60, 140), np.uint8)
    frame[40:140, 20:320:6] = 255
    frame[40:140:10, 20:320] = 255
    return frame


def test_detail_placement_finds_the_detail_and_keeps_flat_cells_on_the_grid():
    frame = _slide()
    grid = pp.patch_positions(1080, 1920, 8, 224)
    patches = pp.prepare(frame[None], DETAIL).patches[0]
    pos = pp.patch_positions(1080, 1920, 8, 224, None, pp.detail_map(pp._luma(frame, -1)))
    # patch 0 left its flat grid spot for the strokes (as much of them as a patch holds),
    # staying inside its own cell (the top-left 540 x 480)
    y, x = pos[0]
    overlap = (min(y + 224, 140) - max(y, 40)) * (min(x + 224, 320) - max(x, 20))
    assert overlap >= 100 * 220
    assert 0 <= y and y + 224 <= 540 and 0 <= x and x + 224 <= 480
    # the other cells are flat: their patches keep the grid spots
    np.testing.assert_array_equal(pos[1:], grid[1:])
    for (y, x), patch in zip(pos, patches, strict=True):
        np.testing.assert_allclose(patch, frame[y:y + 224, x:x + 224].transpose(2, 0, 1) / 255,
                                   atol=1e-6)
    # what the first patch sees: strokes, where the grid's spot saw flat colour
    on_grid = pp.prepare(frame[None], dataclasses.replace(DETAIL, placement="grid")).patches
    assert patches[0].std(axis=(1, 2)).min() > 0.1 and on_grid[0, 0].std(axis=(1, 2)).max() < 1e-6


@pytest.mark.parametrize("h,w", [(1080, 1920), (1920, 1080), (540, 720), (224, 300), (360, 640)])
def test_detail_placement_stays_in_cells_and_frame(h, w):
    frame = pan_frames(1, h, w)[0]
    rows, cols = pp.patch_grid(h, w, 8, 224)
    for rng in (None, np.random.default_rng(0)):
        pos = pp.patch_positions(h, w, 8, 224, rng, pp.detail_map(pp._luma(frame, -1)))
        assert pos.min() >= 0 and (pos[:, 0] + 224).max() <= h and (pos[:, 1] + 224).max() <= w
        for k, (y, x) in enumerate(pos):
            r, c = divmod(k, cols)
            for start, length, n, i in ((y, h, rows, r), (x, w, cols, c)):
                if n * 224 <= length:  # room: the patch stays inside its own cell
                    assert i * length / n <= start + 1e-9 and start + 224 <= (i + 1) * length / n
                else:  # no room: the grid's spot
                    assert start == pp._starts(length, n, 224, None)[i]


def test_detail_placement_ignores_noise_and_follows_the_fit():
    # Light sensor noise (what an encode removes or adds) does not move the patches.
    frame = pan_frames(1, 1080, 1920)[0]
    noisy = np.clip(frame + np.random.default_rng(5).normal(0, 3, frame.shape), 0, 255
                    ).astype(np.uint8)
    a = pp.patch_positions(1080, 1920, 8, 224, None, pp.detail_map(pp._luma(frame, -1)))
    b = pp.patch_positions(1080, 1920, 8, 224, None, pp.detail_map(pp._luma(noisy, -1)))
    assert np.abs(a - b).max() <= 8
    # The paper's fit: positions are chosen on the fitted (scaled) frame the patches come from.
    fit = dataclasses.replace(DETAIL, low_input="fit")
    small = pp.resize(frame, 540, 960)
    p = pp.prepare(frame[None], fit).patches[0]
    pos = pp.patch_positions(540, 960, 8, 224, None, pp.detail_map(pp._luma(small, -1)))
    for (y, x), patch in zip(pos, p, strict=True):
        np.testing.assert_allclose(patch, small[y:y + 224, x:x + 224].transpose(2, 0, 1),
                                   atol=2e-3)


def test_unknown_placement_is_named():
    with pytest.raises(errors.UnknownNameError, match="'grid' or 'detail'"):
        dataclasses.replace(CFG, placement="saliency").validate()
