"""Faces: find them in an image (a detector that returns boxes and scores) and cut them out (one crop function).

Training (`--faces crop`), `emotion test`, `emotion predict`, `emotion video` and `emotion serve` all go through
`face_inputs`, so a face is framed the same way wherever a model meets it.

    image = decode_image("photo.jpg")                    # (H, W, 3) uint8 RGB, longer side <= 1280
    faces = default_detector().detect(image)             # [Face(box=(x, y, w, h), score=..), ...], largest first
    x = crop(image, faces[0].box, size=48, color="grayscale")   # (48, 48, 1) uint8, ready for the model

Two detectors, neither downloading anything at run time (docs/faces.md measures them and the alternatives):
- ``blazeface`` (default): MediaPipe's BlazeFace back-camera model, a 315 KB .tflite shipped inside this
  package (`emotion/shipped/detectors/`), run by the LiteRT interpreter (`ai-edge-litert`, from the package
  index); `emotion.faces.blazeface`.
- ``haar``: OpenCV's Haar cascade for frontal faces, whose XML ships inside the `opencv-python-headless` 4.x
  wheel; `emotion.faces.haar`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from emotion.errors import EmotionError
from emotion.faces.base import MARGIN, Face, check_margin
from emotion.faces.blazeface import BlazeFaceDetector
from emotion.faces.haar import HaarDetector

FACE_MODES = ("largest", "all", "none")  # what `predict`/`video`/`serve` classify in an image
TRAIN_MODES = ("none", "crop", "given")  # data.faces: whole images | crop the largest face | already face crops


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


def make_detector(name: str | None = None, min_score: float | None = None, margin: float | None = None):
    """The named detector (default: blazeface), made once per process and setting. ``min_score``: the score a
    BlazeFace detection needs to count as a face (default 0.5, MediaPipe's; docs/faces.md weighs faces found
    against accuracy on them); Haar's detections carry no such 0-1 score. ``margin``: the crop's (default: the
    detector's, FER2013's framing)."""
    name = check_detector(name, min_score)
    key = (name, None if min_score is None else float(min_score), None if margin is None else check_margin(margin))
    if key not in _MADE:
        if name == "blazeface":
            _MADE[key] = BlazeFaceDetector(margin=margin, **({} if min_score is None else {"min_score": min_score}))
        else:
            _MADE[key] = HaarDetector(margin=margin)
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
        import cv2  # here: cv2 is optional or slow to import

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
                margin: float | None = None, found: list[Face] | None = None) -> list[tuple[Face | None, np.ndarray]]:
    """What a model classifies in one image: ``[(face, input), ...]`` for ``mode`` 'largest' or 'all',
    ``[(None, whole image)]`` for 'none' or where no face is found. ``margin``: default the detector's.
    ``found``: faces already detected in this image (a video between two detections), not searched again."""
    if mode not in FACE_MODES:
        raise EmotionError(f"faces must be one of {', '.join(FACE_MODES)}, got {mode!r}")
    if mode == "none":
        return [(None, to_model_input(image, size, color))]
    detector = detector or default_detector()
    margin = detector.margin if margin is None else margin
    faces = detector.detect(image) if found is None else found
    if not faces:
        return [(None, to_model_input(image, size, color))]
    if mode == "largest":
        faces = faces[:1]
    # (eyes are not levelled: on the seed's photos it did not help, docs/faces.md)
    return [(f, crop(image, f.box, size, color, margin)) for f in faces]
