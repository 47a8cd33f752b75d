"""emotion: a facial-emotion classifier written once in Keras 3, run under JAX, TensorFlow or PyTorch.

Import `emotion.data`, `emotion.config`, `emotion.synth` freely; `emotion.model`, `emotion.module`,
`emotion.trainer` and `emotion.infer` import Keras, so pick the backend first (`backends.select`).
"""

__version__ = "0.1.0"
