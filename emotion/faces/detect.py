"""Faces: find them in an image (a detector that returns boxes and scores) and cut them out (one crop function).

Training (`--faces crop`), `emotion test`, `emotion predict`, `emotion video` and `emotion serve` all go through
`face_inputs`, so a face is framed the same way wherever a model meets it.

    image = decode_image("photo.jpg")                    # (H, W, 3) uint8 RGB, longer side <= 1280
    faces = default_detector().detect(image)             # [Face(box=(x, y, w, h), score=..), ...], largest first
    x = crop(image, faces[0].box, size=48, color="grayscale")   # (48, 48, 1) uint8, ready for the model

Two detectors, neither downloading anything at run time (docs/faces.md measures them and the alternatives):
- ``blazeface`` (default): MediaPipe's BlazeFace back-camera model, a 315 KB .tflite shipped inside this
  package (`emotion/shipped/detectors/`), run by the LiteRT interpreter (`ai-edge-litert`, from the package
  index). On the seed's 301 web photos it found a face of 20 px or more (`MIN_FACE_SIDE`) in 222 (Haar: 151) at
  ~6-11 ms per photo (Haar ~50-140).
- ``haar``: OpenCV's Haar cascade for frontal faces, whose XML ships inside the `opencv-python-headless` 4.x
  wheel (5.0's wheels have an empty `cv2/data`, hence the `<5` pin).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from emotion.errors import EmotionError

# Each side of a face box grows by this share of the box's side before the square is cut. A detector's boxes
# have their own framing, so each detector has its margin (HaarDetector.margin, BlazeFaceDetector.margin),
# chosen with the FER2013 model on the seed's web photos (docs/faces.md); this is the crop function's default.
MARGIN = 0.15
# The smallest face either detector reports: its box's longer side, in the image's own pixels. A smaller face
# holds too few pixels for an expression (the crop is blown up to the model's 48 px from under 20): out of fold
# on the seed's web photos the 19 faces BlazeFace found under 16 px were classified at chance (10 of 19 right)
# against 0.91 for the rest (docs/faces.md). 20 px is MTCNN's default minimum face size; such a photo is then
# classified whole, as one with no face. Pass ``min_side=0`` to a detector to keep every face.
MIN_FACE_SIDE = 20
FACE_MODES = ("largest", "all", "none")  # what `predict`/`video`/`serve` classify in an image
TRAIN_MODES = ("none", "crop", "given")  # data.faces: whole images | crop the largest face | already face crops


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, width, height in the image's pixels
    score: float  # the detector's confidence (Haar: the cascade's level weight; higher is surer)
    eyes: tuple | None = None  # ((x, y), (x, y)) eye centres where the detector gives them (BlazeFace)

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]

    @property
    def side(self) -> int:
        """The box's longer side: what `MIN_FACE_SIDE` bounds."""
        return max(self.box[2], self.box[3])

    @property
    def roll(self) -> float:
        """Degrees the eye line is tilted from horizontal (0 without eyes): `crop` turns the face upright."""
        if self.eyes is None:
            return 0.0
        (x1, y1), (x2, y2) = sorted(self.eyes)
        return float(np.degrees(np.arctan2(y2 - y1, x2 - x1)))

    def to_dict(self) -> dict:
        return {"box": list(self.box), "score": round(self.score, 4)}


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (C++ logging that no setting turns off: LiteRT, OpenCV's video backends) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cascade_path(name: str = "haarcascade_frontalface_default.xml") -> Path:
    """The Haar cascade file inside the installed OpenCV wheel; a one-line error where it is absent."""
    import cv2

    folder = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "")
    path = folder / name
    if not path.is_file():
        raise EmotionError(f"OpenCV {cv2.__version__} ships no {name} (cv2/data is empty in 5.x); "
                           "install opencv-python-headless<5")
    return path


class HaarDetector:
    """OpenCV's Haar cascade on a grey copy of the image scaled so its longer side is ``side`` pixels
    (small images are scaled up: web thumbnails hold faces of 30 px), then boxes mapped back to the image.

    ``min_size`` is the smallest face searched for, as a share of the scaled longer side (0.05: 32 px at 640);
    ``min_side`` the smallest kept, in the image's own pixels (`MIN_FACE_SIDE`). One cascade
    object per thread: OpenCV's `CascadeClassifier` is not safe to share between threads.
    """

    name = "haar"
    margin = 0.15  # Haar's boxes run brow to mouth

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", side: int = 640,
                 scale_factor: float = 1.1, min_neighbors: int = 5, min_size: float = 0.04,
                 min_side: int = MIN_FACE_SIDE):
        self.path = cascade_path(cascade)
        self.side, self.scale_factor, self.min_neighbors, self.min_size = side, scale_factor, min_neighbors, min_size
        self.min_side = int(min_side)
        self._local = threading.local()

    def settings(self) -> dict:
        return {"detector": self.name, "margin": self.margin, "cascade": self.path.name, "side": self.side,
                "scale_factor": self.scale_factor, "min_neighbors": self.min_neighbors, "min_size": self.min_size,
                "min_side": self.min_side}

    def _cascade(self):
        import cv2

        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = self._local.cascade = cv2.CascadeClassifier(str(self.path))
            if cascade.empty():
                raise EmotionError(f"cannot load the face cascade {self.path}")
        return cascade

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an (H, W, 3) RGB or (H, W[, 1]) grey uint8 image, largest first."""
        import cv2

        grey = image if image.ndim == 2 else image[..., 0] if image.shape[-1] == 1 else \
            cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        h, w = grey.shape
        scale = self.side / max(h, w)
        if abs(scale - 1) > 1e-3:
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        smallest = max(20, int(self.min_size * self.side))
        boxes, _, weights = self._cascade().detectMultiScale3(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(smallest, smallest),
            outputRejectLevels=True)
        faces = []
        for (x, y, bw, bh), score in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1),
                                         strict=True):
            box = (int(round(x / scale)), int(round(y / scale)), int(round(bw / scale)), int(round(bh / scale)))
            faces.append(Face(box, float(score)))
        return sorted((f for f in faces if f.side >= self.min_side), key=lambda f: (-f.area, -f.score))


DETECTORS = ("blazeface", "haar")
DEFAULT_DETECTOR = "blazeface"
_MADE: dict = {}


def check_detector(name: str | None = None, min_score: float | None = None) -> str:
    """The detector's name (None: the default), after checking it and that ``min_score`` suits it."""
    name = name or DEFAULT_DETECTOR
    if name not in DETECTORS:
        raise EmotionError(f"detector must be one of {', '.join(DETECTORS)}, got {name!r}")
    if min_score is not None:
        if name != "blazeface":
            raise EmotionError(f"a minimum face score applies to the blazeface detector, not {name}")
        if not 0 <= min_score <= 1:
            raise EmotionError(f"the minimum face score must lie in [0, 1], got {min_score}")
    return name


def make_detector(name: str | None = None, min_score: float | None = None):
    """The named detector (default: blazeface), made once per process and setting. ``min_score``: the score a
    BlazeFace detection needs to count as a face (default 0.5, MediaPipe's; docs/faces.md weighs faces found
    against accuracy on them); Haar's detections carry no such 0-1 score."""
    name = check_detector(name, min_score)
    key = (name, None if min_score is None else float(min_score))
    if key not in _MADE:
        if name == "blazeface":
            from emotion.faces.blazeface import BlazeFaceDetector

            _MADE[key] = BlazeFaceDetector() if min_score is None else BlazeFaceDetector(min_score=min_score)
        else:
            _MADE[key] = HaarDetector()
    return _MADE[key]


def default_detector():
    return make_detector(DEFAULT_DETECTOR)


# ----------------------------------------------------------------------------------------------- crops
def square_box(box, margin: float = MARGIN) -> tuple[int, int, int]:
    """The square (x0, y0, side) centred on ``box`` whose side is the box's longer side grown by ``margin`` on
    each side. It may reach past the image: `crop` pads there by repeating the edge pixels."""
    x, y, w, h = box
    side = max(1, int(round(max(w, h) * (1 + 2 * margin))))
    cx, cy = x + w / 2, y + h / 2
    return int(round(cx - side / 2)), int(round(cy - side / 2)), side


def crop(image: np.ndarray, box, size: int, color: str = "rgb", margin: float = MARGIN,
         roll: float = 0.0) -> np.ndarray:
    """The face in ``box`` as a model input: a square around it (``square_box``), edge-padded where it leaves
    the image, converted to ``color`` and resized to ``size`` x ``size`` exactly as `emotion.images.load_image`
    resizes whole images (Pillow, bilinear, antialiased when shrinking). Returns (size, size, 3 or 1) uint8.
    ``roll`` (degrees, `Face.roll`): the square is cut from the image turned about the box's centre by that
    much, so tilted eyes come out level, as in aligned face sets such as FER2013."""
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    h, w = image.shape[:2]
    x0, y0, side = square_box(box, margin)
    if abs(roll) >= 1.0:
        import cv2

        x, y, bw, bh = box
        turn = cv2.getRotationMatrix2D((x + bw / 2, y + bh / 2), roll, 1.0)
        turn[:, 2] -= (x0, y0)  # the square's corner to (0, 0)
        part = cv2.warpAffine(np.ascontiguousarray(image), turn, (side, side), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        return to_model_input(part, size, color)
    x1, y1 = x0 + side, y0 + side
    pad = [(max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w))] + [(0, 0)] * (image.ndim - 2)
    part = image[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    if part.size == 0:
        raise EmotionError(f"face box {tuple(box)} lies outside the {w}x{h} image")
    if any(a or b for a, b in pad):
        part = np.pad(part, pad, mode="edge")
    return to_model_input(part, size, color)


def to_model_input(image: np.ndarray, size: int, color: str = "rgb") -> np.ndarray:
    """An RGB or grey uint8 array, converted to ``color`` and resized to a square, as training resizes."""
    img = Image.fromarray(np.ascontiguousarray(image))
    img = img.convert("L" if color == "grayscale" else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def face_inputs(image: np.ndarray, size: int, color: str, mode: str = "largest", detector=None,
                margin: float | None = None) -> list[tuple[Face | None, np.ndarray]]:
    """What a model classifies in one image: ``[(face, input), ...]`` for ``mode`` 'largest' or 'all',
    ``[(None, whole image)]`` for 'none' or where no face is found. ``margin``: default the detector's."""
    if mode not in FACE_MODES:
        raise EmotionError(f"faces must be one of {', '.join(FACE_MODES)}, got {mode!r}")
    if mode == "none":
        return [(None, to_model_input(image, size, color))]
    detector = detector or default_detector()
    margin = detector.margin if margin is None else margin
    faces = detector.detect(image)
    if not faces:
        return [(None, to_model_input(image, size, color))]
    if mode == "largest":
        faces = faces[:1]
    # (eyes are not levelled: on the seed's photos it did not help, docs/faces.md)
    return [(f, crop(image, f.box, size, color, margin)) for f in faces]
