"""A face-crop set from a folder of aligned faces: each image scaled up to SIDE px (default 144) and saved as an
RGB PNG under OUT/<class>/, so that the face fills the whole image, as in a photo cropped to its face (a
development aid: `emotion test` on it measures the face pipeline where no face has surroundings).

    python scripts/fill_faces.py ../shared/data/ferplus/val runs/ferplus-val-144
    emotion test --model emotions --data runs/ferplus-val-144 --json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="a folder of class subfolders of face crops, e.g. ../shared/data/ferplus/val")
    p.add_argument("out", help="a new folder")
    p.add_argument("--side", type=int, default=144)
    args = p.parse_args()
    src, out = Path(args.folder), Path(args.out)
    if out.exists():
        raise SystemExit(f"fill_faces.py: error: {out} exists; give a new folder")
    n = 0
    for cls in sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")):
        (out / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir()):
            with Image.open(f) as im:
                im.convert("RGB").resize((args.side, args.side), Image.Resampling.BICUBIC).save(
                    out / cls.name / f"{f.stem}.png")
            n += 1
    print(f"{n} faces of {args.side} px in {out}")


if __name__ == "__main__":
    main()
