"""The seed notebook's own input pipeline and CNN, timed: the reference row of `emotion bench`.

    python scripts/seed_reference.py --data ../shared/data/web-happy-sad [--epochs 6] [--json out.json]

Kept as the notebook had it, on purpose (this is what the project is compared against, not how it works):
`image_dataset_from_directory` (shuffled, batches of 32 at 256x256), `.map(lambda x, y: (x / 255, y))`,
`take`/`skip` for a 70/20 train/val split over the batched dataset, no cache, so every JPEG is read and
decoded again in every epoch; the same three conv/max-pool blocks, Adam, binary cross-entropy, accuracy;
`fit(train, validation_data=val)`. Runs under TensorFlow only.

Reported (JSON): each epoch's seconds of training (validation excluded, as in `emotion bench`) and the warm
epochs' seconds per step of ``batch_size`` images (an epoch's seconds / its images x batch size).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of class subfolders (e.g. happy/ sad/)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=6, help="the first is the cold one")
    p.add_argument("--json", help="write the result here (default: print it)")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (one cold, one warm)")

    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from tensorflow.keras.layers import Conv2D, Dense, Flatten, MaxPooling2D
    from tensorflow.keras.models import Sequential

    for gpu in tf.config.experimental.list_physical_devices("GPU"):  # as the seed did
        tf.config.experimental.set_memory_growth(gpu, True)

    # ---- the seed notebook, cell by cell -------------------------------------------------------------
    size = (args.image_size, args.image_size)
    data = tf.keras.utils.image_dataset_from_directory(args.data, image_size=size, batch_size=args.batch_size,
                                                       verbose=False)
    n_files = len(data.file_paths)
    data = data.map(lambda x, y: (x / 255, y))
    train_size = int(len(data) * 0.7)
    val_size = int(len(data) * 0.2)
    train = data.take(train_size)
    val = data.skip(train_size).take(val_size)

    model = Sequential()
    model.add(Conv2D(16, (3, 3), 1, activation="relu", input_shape=(*size, 3)))
    model.add(MaxPooling2D())
    model.add(Conv2D(32, (3, 3), 1, activation="relu"))
    model.add(MaxPooling2D())
    model.add(Conv2D(16, (3, 3), 1, activation="relu"))
    model.add(MaxPooling2D())
    model.add(Flatten())
    model.add(Dense(256, activation="relu"))
    model.add(Dense(1, activation="sigmoid"))
    model.compile("adam", loss=tf.losses.BinaryCrossentropy(), metrics=["accuracy"])
    # ---------------------------------------------------------------------------------------------------

    class TrainTimer(tf.keras.callbacks.Callback):
        """Seconds from epoch start to the end of its last training batch (validation not counted)."""

        def on_epoch_begin(self, epoch, logs=None):
            self.t = self.last = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(self.last - self.t)

    seconds: list[float] = []
    train_images = min(train_size * args.batch_size, n_files)
    model.fit(train, epochs=args.epochs, validation_data=val if val_size else None, callbacks=[TrainTimer()],
              verbose=0)
    per_step = [s / train_images * args.batch_size for s in seconds]
    warm = np.asarray(per_step[1:])
    result = {
        "pipeline": "seed notebook: image_dataset_from_directory, map x/255, take/skip, no cache",
        "backend": "tensorflow", "framework_version": tf.__version__,
        "files": n_files, "steps_per_epoch": train_size, "images_per_epoch": train_images,
        "epochs_s": seconds, "first_epoch_s": seconds[0],
        "warm_step_s": {"median": float(np.median(warm)), "min": float(warm.min()), "max": float(warm.max()),
                        "values": [round(float(v), 6) for v in warm]},
    }
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
