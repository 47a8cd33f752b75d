"""A test clip for `emotion video`: 640x480 frames in which N copies of a photo's face drift about on a grey
background (a development aid; tests draw their own clips).

    python scripts/make_clip.py ../shared/data/web-happy-sad/happy/some.jpg /tmp/clip1.mp4 --faces 1 --frames 300
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from emotion.faces.detect import crop, default_detector
from emotion.images import decode_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("photo")
    p.add_argument("out")
    p.add_argument("--faces", type=int, default=1)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--size", type=int, default=150, help="face tile side in pixels")
    args = p.parse_args()
    image = decode_image(args.photo)
    found = default_detector().detect(image)
    if not found:
        raise SystemExit(f"no face found in {args.photo}")
    tile = cv2.cvtColor(crop(image, found[0].box, args.size, "rgb", margin=0.4), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    rng = np.random.default_rng(0)
    starts = rng.uniform([0, 0], [640 - args.size, 480 - args.size], (args.faces, 2))
    speeds = rng.uniform(-3, 3, (args.faces, 2))
    for i in range(args.frames):
        frame = np.full((480, 640, 3), 110, np.uint8)
        for (x, y), (dx, dy) in zip(starts, speeds, strict=True):
            x = int(abs((x + dx * i) % (2 * (640 - args.size)) - (640 - args.size)))
            y = int(abs((y + dy * i) % (2 * (480 - args.size)) - (480 - args.size)))
            frame[y:y + args.size, x:x + args.size] = tile
        writer.write(frame)
    writer.release()
    print(f"wrote {args.out}: {args.frames} frames of 640x480 with {args.faces} face(s)")


if __name__ == "__main__":
    main()
