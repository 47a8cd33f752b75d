"""Weight surgery: a model restricted to some of its classes answers what the full model says among them."""

import numpy as np
import pytest

from emotion.errors import EmotionError
from emotion.models.presets import build_model
from emotion.models.surgery import restrict_classes, with_flip_tta


@pytest.fixture(scope="module")
def four():
    model = build_model("vgg-bn", (24, 24, 1), 4, widths=(4, 8, 8, 8))
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    rng = np.random.default_rng(0)
    head.set_weights([rng.normal(0, 0.5, kernel.shape).astype("float32"), rng.normal(0, 0.5, 4).astype("float32")])
    return model, np.random.default_rng(1).integers(0, 256, (6, 24, 24, 1)).astype("float32")


def test_two_kept_classes_give_the_full_models_probability_of_the_second_given_one_of_the_two(four):
    model, x = four
    p = np.asarray(model.predict(x, verbose=0))
    two = restrict_classes(model, [3, 1])
    assert two.output_shape[-1] == 1
    got = np.asarray(two.predict(x, verbose=0))[:, 0]
    np.testing.assert_allclose(got, p[:, 1] / (p[:, 3] + p[:, 1]), atol=1e-5)


def test_three_kept_classes_are_the_full_softmax_renormalised_and_a_flip_wrapper_is_kept(four):
    model, x = four
    p = np.asarray(model.predict(x, verbose=0))[:, [0, 2, 3]]
    three = restrict_classes(model, [0, 2, 3])
    np.testing.assert_allclose(np.asarray(three.predict(x, verbose=0)), p / p.sum(1, keepdims=True), atol=1e-5)
    wrapped = restrict_classes(with_flip_tta(model), [0, 2])
    assert any(layer.name == "flip_tta" for layer in wrapped.layers)


@pytest.mark.parametrize("keep", [[1], [0, 0], [0, 9]])
def test_impossible_subsets_are_refused(four, keep):
    with pytest.raises(EmotionError, match="cannot keep classes"):
        restrict_classes(four[0], keep)
