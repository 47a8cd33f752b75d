"""What every face detector returns (`Face`) and shares: the crop margin's default and the smallest face kept
(silencing the C++ logging of the libraries detectors run on is `emotion.errors.quiet_stderr`).

    Face(box=(10, 20, 64, 64), score=0.93).side          # 64
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from emotion.errors import EmotionError

# Each side of a face box grows by this share of the box's side before the square is cut. A detector's boxes
# have their own framing, so each detector has its margin (HaarDetector.margin, BlazeFaceDetector.margin): the
# one that cuts the square FER2013's faces were cut as, on which the models learn faces (measured where the
# faces' framing is known: docs/faces.md, "The framing"); this is the crop function's default, BlazeFace's.
MARGIN = 0.1
MAX_MARGIN = 2.0  # a square five times the box's side
# The smallest face either detector reports: its box's longer side, in the image's own pixels (why 20 px, as
# measured: docs/faces.md, "The smallest face"). Pass ``min_side=0`` to a detector to keep every face.
MIN_FACE_SIDE = 20


def margin_ok(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_MARGIN


margin_ok.__doc__ = f"a number in [0, {MAX_MARGIN:g}] (emotion.faces.base.MAX_MARGIN)"  # what a setting's check says


def check_margin(margin) -> float:
    """``margin`` as a float, or a one-line `EmotionError` where it is not `margin_ok`."""
    if not margin_ok(margin):
        raise EmotionError(f"the crop margin must be a number in [0, {MAX_MARGIN:g}] (a share of the face box's "
                           f"side added on each side), got {margin!r}")
    return float(margin)


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
        return math.degrees(math.atan2(y2 - y1, x2 - x1))

    def to_dict(self) -> dict:
        return {"box": list(self.box), "score": round(self.score, 4)}
