"""OpenCV's Haar cascade for frontal faces, whose XML ships inside the `opencv-python-headless` 4.x wheel
(5.0's wheels have an empty `cv2/data`, hence the `<5` pin).

    faces = HaarDetector().detect(image)                  # [Face(...), ...], largest first
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from emotion.errors import EmotionError
from emotion.faces.base import MIN_FACE_SIDE, Face, check_margin


def cascade_path(name: str = "haarcascade_frontalface_default.xml") -> Path:
    """The Haar cascade file inside the installed OpenCV wheel; a one-line error where it is absent."""
    import cv2  # here: cv2 is optional or slow to import

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
    ``min_side`` the smallest kept, in the image's own pixels (`MIN_FACE_SIDE`); ``margin`` how much each side of
    a box grows before the square is cut (None: the class's ``margin``). One cascade
    object per thread: OpenCV's `CascadeClassifier` is not safe to share between threads.
    """

    name = "haar"
    margin = 0.05  # a Haar box is about a FER2013 face's own framing (docs/faces.md, "The framing")

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", side: int = 640,
                 scale_factor: float = 1.1, min_neighbors: int = 5, min_size: float = 0.04,
                 min_side: int = MIN_FACE_SIDE, margin: float | None = None):
        self.margin = check_margin(self.margin if margin is None else margin)
        self.path = cascade_path(cascade)
        self.side, self.scale_factor, self.min_neighbors, self.min_size = side, scale_factor, min_neighbors, min_size
        self.min_side = int(min_side)
        self._local = threading.local()

    def settings(self) -> dict:
        return {"detector": self.name, "margin": self.margin, "cascade": self.path.name, "side": self.side,
                "scale_factor": self.scale_factor, "min_neighbors": self.min_neighbors, "min_size": self.min_size,
                "min_side": self.min_side}

    def _cascade(self):
        import cv2  # here: cv2 is optional or slow to import

        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = self._local.cascade = cv2.CascadeClassifier(str(self.path))
            if cascade.empty():
                raise EmotionError(f"cannot load the face cascade {self.path}")
        return cascade

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an (H, W, 3) RGB or (H, W[, 1]) grey uint8 image, largest first."""
        import cv2  # here: cv2 is optional or slow to import

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
