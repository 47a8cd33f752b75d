import keras
import numpy as np
import pytest

from emotion.errors import EmotionError
from emotion.models.module import EmotionClassifier
from emotion.models.presets import PRESETS, build_model


def test_seed_preset_matches_the_seed_notebook():
    model = build_model("seed", (256, 256, 3), 2)
    assert model.count_params() == 3_696_625
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Rescaling", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D",
                     "Flatten", "Dense", "Dense"]
    assert model.output_shape == (None, 1)


def test_rescaling_is_inside_the_model():
    model = build_model("seed", (32, 32, 3), 2)
    rescale = model.layers[0]
    x = np.full((1, 32, 32, 3), 255.0, np.float32)
    assert np.allclose(keras.ops.convert_to_numpy(rescale(x)), 1.0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_heads_follow_the_number_of_classes(preset):
    assert build_model(preset, (48, 48, 1), 2).output_shape == (None, 1)
    assert build_model(preset, (48, 48, 1), 6).output_shape == (None, 6)


def test_module_compiles_with_the_seed_metrics():
    module = EmotionClassifier("seed", (32, 32, 3), 2)
    model = module.compile()
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    logs = model.evaluate(x, np.array([[0], [1], [0], [1]], "float32"), verbose=0, return_dict=True)
    assert {"loss", "accuracy", "precision", "recall"} <= set(logs)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(EmotionError, match="unknown preset"):
        build_model("resnet9000")


def test_mixed_bfloat16_computes_in_bfloat16_with_a_float32_head(tmp_path):
    before = keras.config.dtype_policy().name
    module = EmotionClassifier("vgg-bn", (32, 32, 1), 2, precision="mixed_bfloat16")
    model = module.compile()
    assert keras.config.dtype_policy().name == before  # the policy is put back after the build
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    assert all(v.dtype == "float32" for v in model.weights)  # weights stay float32
    assert model.get_layer("head").compute_dtype == "float32"
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    y = rng.integers(0, 2, (8, 1)).astype("float32")
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    out = model.predict(x, verbose=0)
    assert out.dtype == np.float32 and np.all((out >= 0) & (out <= 1))
    path = tmp_path / "bf16.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer(convs[0].name).compute_dtype == "bfloat16"
    np.testing.assert_allclose(loaded.predict(x, verbose=0), out, atol=1e-6)


def test_unknown_precision_is_a_clear_error():
    from emotion.config import load_config

    with pytest.raises(EmotionError, match="unknown precision"):
        build_model("seed", (32, 32, 3), 2, precision="float8")
    with pytest.raises(EmotionError, match="trainer.precision must be one of"):
        load_config(None, {"trainer.precision": "bf16"})


def test_vgg_bn_augment_adds_web_photo_augmentation_for_training_only():
    plain = build_model("vgg-bn", (32, 32, 1), 2)
    strong = build_model("vgg-bn", (32, 32, 1), 2, augment={"brightness": 0.2, "blur": 0.5, "erasing": 0.5})
    kinds = {type(layer).__name__ for layer in strong.layers} - {type(layer).__name__ for layer in plain.layers}
    assert kinds == {"RandomBrightness", "RandomGaussianBlur", "RandomErasing"}
    assert strong.count_params() == plain.count_params()
    strong.set_weights(plain.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    same = [keras.ops.convert_to_numpy(m(x, training=False)) for m in (plain, strong)]
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)  # identity at inference
