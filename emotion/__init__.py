"""emotion: a facial-emotion classifier written once in Keras 3, run under JAX, TensorFlow or PyTorch.

Import `emotion.data.datamodule`, `emotion.config`, `emotion.data.synth` freely; `emotion.models.presets`, `emotion.models.module`,
`emotion.training.trainer` and `emotion.infer` import Keras, so pick the backend first (`backends.select`).
"""

__version__ = "0.1.0"
