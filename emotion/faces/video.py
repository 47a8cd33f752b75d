"""`emotion video`: faces and their emotions in a video file or a camera, frame by frame.

    emotion video clip.mp4 --out annotated.mp4 --csv frames.csv
    emotion video 0                      # camera 0; a live window where a display exists

Each frame: detect faces (`emotion.faces.detect`, the predictor's detector), classify every face in
one batch, and smooth each face's probabilities over frames: a face is followed from frame to frame by the
overlap of its boxes (IoU >= 0.3, greedy, largest overlap first), and its shown probabilities are an
exponential moving average, ``p = smooth * p_previous + (1 - smooth) * p_now`` (0: no smoothing), so a label
does not flicker on one odd frame. A face not seen for ``keep_frames`` frames is forgotten.
"""

from __future__ import annotations

import csv
import os
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from emotion.errors import EmotionError, quiet_stderr
from emotion.files import atomic_path

# BGR, one a class (by its index among the model's classes): green, blue, red, orange, purple, cyan, magenta, olive
COLORS = [(75, 180, 60), (200, 130, 0), (48, 48, 230), (48, 130, 245), (180, 30, 145), (240, 240, 70),
          (230, 50, 240), (0, 128, 128)]


def class_color(class_names: list[str], label: str) -> tuple[int, int, int]:
    """The colour of a class: its own (by its index) for up to eight classes, so happy and sad never share one."""
    index = class_names.index(label) if label in class_names else 0
    return COLORS[index % len(COLORS)]


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0


class Tracks:
    """Faces followed across frames by box overlap, each with its smoothed probabilities."""

    def __init__(self, smooth: float = 0.6, keep_frames: int = 5, min_iou: float = 0.3):
        self.smooth, self.keep_frames, self.min_iou = smooth, keep_frames, min_iou
        self.tracks: dict[int, dict] = {}  # id -> {"box", "p", "seen"}
        self.next_id = 0

    def update(self, frame: int, boxes: list, probs: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(track id, smoothed probabilities) for each box, in the order given."""
        pairs = sorted(((iou(t["box"], b), tid, i) for tid, t in self.tracks.items() for i, b in enumerate(boxes)),
                       reverse=True)
        taken_tracks, assigned = set(), {}
        for overlap, tid, i in pairs:
            if overlap < self.min_iou:
                break
            if tid not in taken_tracks and i not in assigned:
                taken_tracks.add(tid)
                assigned[i] = tid
        out = []
        for i, (box, p) in enumerate(zip(boxes, probs, strict=True)):
            tid = assigned.get(i)
            if tid is None:  # a new face
                tid, self.next_id = self.next_id, self.next_id + 1
                self.tracks[tid] = {"p": p}
            t = self.tracks[tid]
            t["p"] = self.smooth * t["p"] + (1 - self.smooth) * p if i in assigned else p
            t["box"], t["seen"] = box, frame
            out.append((tid, t["p"]))
        self.tracks = {k: t for k, t in self.tracks.items() if frame - t["seen"] < self.keep_frames}
        return out


def open_source(source: str):
    import cv2  # here: cv2 is optional or slow to import

    is_camera = source.isdigit()
    if not is_camera and not Path(source).is_file():
        raise EmotionError(f"video not found: {source}")
    with quiet_stderr():  # OpenCV and FFmpeg print their own warnings; the error below says it in one line
        cap = cv2.VideoCapture(int(source) if is_camera else source)
    if not cap.isOpened():
        raise EmotionError(f"cannot open {'camera' if is_camera else 'video'} {source}")
    return cap


def display_available() -> bool:
    """A live window needs a display and an OpenCV built with a GUI (the headless wheel has none)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.name == "nt"):
        return False
    import cv2  # here: cv2 is optional or slow to import

    try:
        cv2.namedWindow("emotion")
        return True
    except cv2.error:
        return False


def draw(frame_bgr, box, text: str, color) -> None:
    """A box and its label, the text and lines scaled with the image (legible on a 4000-px photo as on a
    640-px frame: 0.5 at 640 px on the shorter side)."""
    import cv2  # here: cv2 is optional or slow to import

    x, y, w, h = box
    scale = max(0.5, min(frame_bgr.shape[:2]) / 1280)
    thick = max(1, round(2 * scale))
    cv2.rectangle(frame_bgr, (x, y), (x + w, y + h), color, max(2, thick))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(3, round(3 * scale))
    top = max(y - th - 2 * pad, 0)
    cv2.rectangle(frame_bgr, (x, top), (x + tw + 2 * pad, top + th + 2 * pad), color, -1)
    cv2.putText(frame_bgr, text, (x + pad, top + th + pad), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thick, cv2.LINE_AA)


def run(source: str, predictor, out: str | None = None, csv_path: str | None = None, show: bool = False,
        faces: str = "all", smooth: float = 0.6, detect_every: int = 1,
        max_frames: int | None = None, log=print) -> dict:
    """Process a video; returns {"frames", "faces", "seconds", "fps"}. ``out`` and ``csv_path`` are written under
    temporary names and renamed into place at the end, so an error or Ctrl-C leaves what was there; a source
    from which no frame can be read is an error, and writes nothing."""
    with ExitStack() as stack:
        out_tmp = str(stack.enter_context(atomic_path(out))) if out else None
        csv_tmp = str(stack.enter_context(atomic_path(csv_path))) if csv_path else None
        return _run(source, predictor, out_tmp, csv_tmp, show, faces, smooth, detect_every, max_frames, log)


def _run(source, predictor, out, csv_path, show, faces, smooth, detect_every, max_frames, log) -> dict:
    import cv2  # here: cv2 is optional or slow to import

    cap = open_source(source)
    fps_in = cap.get(cv2.CAP_PROP_FPS) or 25.0
    if not 1 <= fps_in <= 1000:
        fps_in = 25.0
    detector = predictor.detector
    tracks = Tracks(smooth)
    writer = table = None
    handle = None
    if show and not display_available():
        log("no display here: --show is ignored (the annotated video and CSV are still written)")
        show = False
    names = predictor.class_names
    frames = n_faces = 0
    boxes: list = []
    known: list = []
    t0 = time.perf_counter()
    try:
        if csv_path:
            handle = open(csv_path, "w", newline="")
            table = csv.writer(handle)
            table.writerow(["frame", "time_s", "face", "x", "y", "w", "h", "label", "p",
                            *[f"p_{c}" for c in names]])
        while max_frames is None or frames < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if faces != "none" and frames % detect_every == 0:  # between detections, the boxes stay
                known = detector.detect(rgb)
                known = known[:1] if faces == "largest" else known
            pairs = predictor.inputs(rgb, faces, found=known if faces != "none" else None)
            if faces != "none":  # a frame without a face has nothing to classify
                pairs = [(f, x) for f, x in pairs if f is not None]
            boxes, inputs = [f.box for f, _ in pairs if f is not None], [x for _, x in pairs]
            probs = predictor.probabilities(np.stack(inputs)) if inputs else np.zeros((0, len(names)))
            t = frames / fps_in
            if faces == "none":
                p = probs[0]
                text = f"{names[int(p.argmax())]} {p.max():.2f}"
                cv2.putText(frame, text, (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.8, COLORS[0], 2, cv2.LINE_AA)
                if table:
                    table.writerow([frames, f"{t:.3f}", "", "", "", "", "", names[int(p.argmax())],
                                    f"{p.max():.4f}", *[f"{v:.4f}" for v in p]])
            else:
                smoothed = tracks.update(frames, boxes, probs)
                for box, (tid, p) in zip(boxes, smoothed, strict=True):
                    label = names[int(p.argmax())]
                    draw(frame, box, f"{label} {p.max():.2f}", class_color(names, label))
                    if table:
                        table.writerow([frames, f"{t:.3f}", tid, *box, label, f"{p.max():.4f}",
                                        *[f"{v:.4f}" for v in p]])
                if table and not boxes:
                    table.writerow([frames, f"{t:.3f}", *[""] * (7 + len(names))])
                n_faces += len(boxes)
            if out:
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (w, h))
                    if not writer.isOpened():
                        raise EmotionError(f"cannot write video {out}")
                writer.write(frame)
            if show:
                cv2.imshow("emotion", frame)
                if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                    break
            frames += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if handle is not None:
            handle.close()
        if show:
            cv2.destroyAllWindows()
    seconds = time.perf_counter() - t0
    if frames == 0 and max_frames != 0:
        raise EmotionError(f"no frame could be read from {source}: not a video OpenCV can decode (nothing written)")
    return {"frames": frames, "faces": n_faces, "seconds": seconds, "fps": frames / seconds if seconds else 0.0}
