"""`Predictor`: a loaded model and how it meets images: faces found and cropped the way it was trained, batches
padded to few shapes, one row per face. `emotion predict`, `test`, `video`, `serve` and `emotion.load` all use it.

    clf = Predictor.load()                                   # the model that ships with the package
    clf = Predictor.load("runs/fer/imageclassifier.keras")  # or a run's model
    for row in clf.predict_files(["photo.jpg", "folder/"]):  # streams, a few images at a time
        print(row)   # {"file": "photo.jpg", "face": 0, "box": [x, y, w, h], "label": "happy", "p": 0.97, ...}
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from emotion.errors import EmotionError
from emotion.faces.detect import FACE_MODES, check_detector, face_inputs, make_detector
from emotion.guard import Limits
from emotion.images import IMAGE_SUFFIXES, MAX_IMAGE_MB, decode_image, load_image
from emotion.modelfile import open_model


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given and image files under folders (recursively, sorted, hidden ones left out). Every path
    is checked before anything is loaded: a missing one is an error."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out += [Path(dirpath) / f for f in sorted(filenames)
                        if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)
                        and (Path(dirpath) / f).is_file()]
        elif p.is_file():
            out.append(p)
        elif p.exists():
            raise EmotionError(f"not a regular file or folder: {p}")
        else:
            raise EmotionError(f"image or folder not found: {p}")
    return out


class Predictor:
    """A model, its class names and how it meets images (``faces``: 'largest' | 'all' | 'none'): faces found
    and cropped as the model was trained to see them, batched, one row per face.

        clf = Predictor.load("emotions", faces="all")          # or emotion.load(...)
        clf.predict("group.jpg")     # [{"face": 0, "box": [...], "label": "happy", "p": 0.91, "probs": {...}}, ...]
        clf.probabilities(crops)     # (n, 8) for (n, 48, 48, 1) uint8 face crops
    """

    def __init__(self, model, class_names: list[str], faces: str = "none", margin: float | None = None,
                 detector: str | None = None, face_model: bool | None = None, min_face_score: float | None = None):
        """``face_model``: whether the model was trained on faces (default: whether ``faces`` crops them).
        ``min_face_score``: the detector score a face needs (`emotion.faces.detect.make_detector`)."""
        self.model, self.class_names, self.margin = model, class_names, margin
        check_detector(detector, min_face_score)
        self.detector_name, self.min_face_score = detector, min_face_score
        _, h, w, c = model.input_shape
        if h is None or h != w:
            raise EmotionError(f"model input {model.input_shape} is not a fixed square image")
        self.image_size, self.color = int(h), ("grayscale" if c == 1 else "rgb")
        self.faces = faces
        self.face_model = faces != "none" if face_model is None else face_model

    @property
    def detector(self):
        """The detector this model's faces are found with, cutting them with the model's margin (recorded by a
        model trained on crops; else the detector's own), wherever they are cut: `inputs`, `emotion test`."""
        return make_detector(self.detector_name, self.min_face_score, self.margin)

    @classmethod
    def load(cls, path: str | Path | None = None, class_names: list[str] | None = None,
             faces: str | None = None, detector: str | None = None, runtime: str | None = None,
             limits: Limits | None = None, min_face_score: float | None = None) -> Predictor:
        """``faces=None``: 'all' (a row for every face) for a model trained on faces, else 'none'. ``detector``:
        blazeface (default) or haar; ``min_face_score``: the blazeface score a face needs (default 0.5).
        ``runtime``: 'keras' (default for a .keras) or 'onnx' (the model's ONNX export under onnxruntime; no
        TensorFlow, JAX or PyTorch).
        ``limits``: what `emotion.guard` allows the file (default: its defaults)."""
        model, meta = open_model(path, runtime, limits)
        outputs = int(model.output_shape[-1])
        k = max(outputs, 2)
        names = class_names or meta.get("class_names")
        if not (isinstance(names, list) and len(names) == k):
            names = class_names or [f"class_{i}" for i in range(k)]
        if len(names) != k:
            raise EmotionError(f"model has {k} classes but {len(names)} class names were given")
        trained_on_faces = meta.get("faces") == "crop"
        if faces is not None and faces not in FACE_MODES:
            raise EmotionError(f"faces must be one of {', '.join(FACE_MODES)}, got {faces!r}")
        return cls(model, [str(n) for n in names], faces or ("all" if trained_on_faces else "none"),
                   meta.get("margin"), detector or meta.get("detector"), trained_on_faces, min_face_score)

    def preprocess(self, path: str | Path) -> np.ndarray:
        """The whole image as the model's input (no face search)."""
        path = Path(path)
        if not path.is_file():
            raise EmotionError(f"image not found: {path}")
        try:
            return load_image(path, self.image_size, self.color)
        except ValueError as e:
            raise EmotionError(f"cannot read image {path}: {e}") from None

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(n, k) class probabilities for uint8 images of the model's size. Each model call takes a power of two
        images (at most 64, zero-padded), so compiled predict functions see few distinct shapes, in chunks that
        waste little: 31 images go as one call (padded to 32), 17 as 16 + 1 rather than padded to 32."""
        out, start = [], 0
        while start < len(images):  # converted a chunk at a time: a memory-mapped set stays on disk
            left = len(images) - start
            n = left if left <= 64 and 2 ** math.ceil(math.log2(left)) <= 1.25 * left else \
                min(64, 2 ** int(math.log2(left)))
            part = np.asarray(images[start:start + n], np.float32)
            padded = 2 ** math.ceil(math.log2(n)) if n > 1 else 1
            if padded > n:
                part = np.concatenate([part, np.zeros((padded - n, *part.shape[1:]), np.float32)])
            out.append(np.asarray(self.model.predict_on_batch(part), dtype=np.float64)[:n])
            start += n
        p = np.concatenate(out) if out else np.zeros((0, self.model.output_shape[-1]))
        return np.concatenate([1 - p, p], axis=1) if p.shape[-1] == 1 else p

    def row(self, p: np.ndarray) -> dict:
        i = int(p.argmax())
        return {"label": self.class_names[i], "p": float(p[i]),
                "probs": {c: float(v) for c, v in zip(self.class_names, p, strict=True)}}

    def inputs(self, image: np.ndarray, faces: str | None = None, found: list | None = None):
        """[(Face or None, model input)] for a decoded (H, W, C) uint8 image: `emotion.faces.detect.face_inputs`
        with this model's size, colour, detector and margin. ``found``: faces already detected in it."""
        mode = faces or self.faces
        detector = self.detector if mode != "none" else None
        return face_inputs(image, self.image_size, self.color, mode, detector, self.margin, found)

    def find_faces(self, images: list, faces: str | list | None = None, pool=None) -> list:
        """`inputs` of each decoded image (``faces``: one mode for all, or one a image), in ``pool``'s threads
        where one is given (each detector keeps one interpreter a thread)."""
        modes = faces if isinstance(faces, list) else [faces] * len(images)
        if pool is not None and len(images) > 1:
            return list(pool.map(self.inputs, images, modes))
        return [self.inputs(x, m) for x, m in zip(images, modes, strict=True)]

    def face_rows(self, found: list) -> list[list[dict]]:
        """The rows of each image's faces (`find_faces`), from one `probabilities` call over every crop of
        them all: the one batching path of `predict_files`, `emotion serve` and the page."""
        crops = [x for f in found for _, x in f]
        probs = iter(self.probabilities(np.stack(crops)) if crops else [])
        return [[self.face_row(face, i, next(probs)) for i, (face, _) in enumerate(f)] for f in found]

    def predict_image(self, image: np.ndarray, faces: str | None = None) -> list[dict]:
        """One row per face found (or one whole-image row) of a decoded RGB image."""
        return self.face_rows(self.find_faces([image], faces))[0]

    def predict(self, image, faces: str | None = None) -> list[dict]:
        """Rows (one per face, or one for the whole image) for an image file, or for an array of raw 0-255
        pixel values: (H, W, 3) RGB, as PIL or ``cv2.cvtColor(cv2.imread(f), cv2.COLOR_BGR2RGB)`` gives it, or
        (H, W) gray. The model resizes and rescales inside: do not divide by 255 (a warning says so when every
        value lies in [0, 1]). ``faces``: 'largest', 'all' or 'none' (default: the model's own)."""
        if isinstance(image, str | Path):
            if not Path(image).is_file():
                raise EmotionError(f"image not found: {image}")
            rows = list(self.predict_files([image], faces))
            if rows and "error" in rows[0]:
                raise EmotionError(f"cannot read image {image}: {rows[0]['error']}")
            return rows
        x = np.asarray(image)
        if x.ndim == 3 and x.shape[-1] == 1:
            x = x[..., 0]
        if not (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (3, 4))) or min(x.shape[:2]) < 1 \
                or x.dtype.kind not in "uif":
            raise EmotionError(f"expected an (H, W, 3) RGB or (H, W) gray image of numbers, got an array of shape "
                               f"{x.shape} and dtype {x.dtype}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise EmotionError("the image holds NaN or infinite values")
        if x.max() <= 1:
            warnings.warn("every pixel of this image lies in [0, 1], but the model takes raw 0-255 values (it "
                          "rescales inside): multiply by 255, or pass the image as decoded", stacklevel=2)
        if x.dtype != np.uint8:
            x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        x = x[..., :3] if x.ndim == 3 else np.repeat(x[..., None], 3, axis=2)  # detectors take RGB
        return self.predict_image(x, faces)

    def face_row(self, face, index: int, p) -> dict:
        """The row of one face (or of the whole image, ``face`` None) with class probabilities ``p``."""
        return {"face": index if face else None, "box": list(face.box) if face else None,
                "score": round(face.score, 4) if face else None, "whole_image": face is None, **self.row(p)}

    def predict_files(self, paths: Iterable[str | Path], faces: str | None = None, chunk: int = 16,
                      on_image=None, max_image_mb: float | None = None) -> Iterator[dict]:
        """Rows for each face of each image, streamed ``chunk`` images at a time (decoded in threads), so
        memory does not grow with the number of files. An unreadable file, or one over ``max_image_mb``
        (default: the data module's), gives one row with an "error".
        ``on_image(path, image, rows)`` is called for each decoded image (e.g. to draw on it)."""
        def work(path):
            try:
                image = decode_image(path, max_image_mb=max_image_mb or MAX_IMAGE_MB)
                return image, self.inputs(image, faces), None
            except (ValueError, OSError) as e:
                return None, None, str(e)

        paths = list(paths)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for start in range(0, len(paths), chunk):
                part = paths[start:start + chunk]
                done = list(pool.map(work, part))
                rows = iter(self.face_rows([found for _, found, error in done if error is None]))
                for path, (image, _, error) in zip(part, done, strict=True):
                    if error is not None:
                        yield {"file": str(path), "error": error}
                        continue
                    image_rows = [{"file": str(path), **row} for row in next(rows)]
                    if on_image is not None:
                        on_image(path, image, image_rows)
                    yield from image_rows
