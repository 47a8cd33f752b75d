"""Weight surgery: a model restricted to some of its classes answers what the full model says among them."""

import keras
import numpy as np
import pytest

from emotion.errors import EmotionError
from emotion.models.presets import build_model
from emotion.models.surgery import adjust_logits, restrict_classes, with_flip_tta


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


def test_logit_adjustment_divides_each_class_probability_by_its_prior_to_the_power_tau(four):
    model, x = four
    p = np.asarray(model.predict(x, verbose=0))
    counts = np.array([100, 10, 1, 0])  # a class with no example counts as one
    prior = np.maximum(counts, 1) / np.maximum(counts, 1).sum()
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    adjust_logits(copy, counts, 0.5)
    want = p / prior ** 0.5
    np.testing.assert_allclose(np.asarray(copy.predict(x, verbose=0)), want / want.sum(1, keepdims=True), atol=1e-5)
    got = np.asarray(copy.predict(x, verbose=0))
    assert (got[:, 0] < p[:, 0]).all() and (got[:, 3] > p[:, 3]).all(), "the common class loses, the rarest gains"


def test_logit_adjustment_of_a_two_class_sigmoid_head_and_through_a_flip_wrapper():
    two = build_model("vgg-bn", (24, 24, 1), 2, widths=(4, 8, 8, 8))
    x = np.random.default_rng(2).integers(0, 256, (5, 24, 24, 1)).astype("float32")
    p = np.asarray(two.predict(x, verbose=0))[:, 0]
    adjust_logits(with_flip_tta(two), [30, 10], 1.0)  # P(second) / P(first) grows by 30 / 10
    got = np.asarray(two.predict(x, verbose=0))[:, 0]
    np.testing.assert_allclose(got / (1 - got), 3 * p / (1 - p), rtol=1e-4)


@pytest.mark.parametrize("counts, tau", [([1, 2, 3], 0.5), ([1, 2, 3, -1], 0.5), ([1, 2, 3, 4], 1.5)])
def test_impossible_logit_adjustments_are_refused(four, counts, tau):
    with pytest.raises(EmotionError, match="logit adjustment needs 4"):
        adjust_logits(four[0], counts, tau)


def test_fits_logit_adjust_setting_moves_the_head_by_the_training_splits_prior_before_the_flip_wrapper():
    from types import SimpleNamespace

    from emotion.config import from_dict
    from emotion.training.callbacks import FlipTTA, LogitAdjust, default_callbacks

    cbs = default_callbacks(from_dict({"trainer": {"logit_adjust": 0.5, "tta_flip": True}}), "unused", write=False)
    kinds = [type(cb) for cb in cbs]
    assert kinds.index(LogitAdjust) < kinds.index(FlipTTA)
    assert LogitAdjust not in [type(cb) for cb in default_callbacks(from_dict({}), "unused", write=False)]
    two = build_model("vgg-bn", (24, 24, 1), 2, widths=(4, 8, 8, 8))
    before = two.get_layer("head").get_weights()[1].copy()
    dm = SimpleNamespace(train=SimpleNamespace(labels=np.array([0, 0, 0, 0, 1])), num_classes=2)
    LogitAdjust(0.5).on_fit_end(SimpleNamespace(datamodule=dm), SimpleNamespace(model=two))
    np.testing.assert_allclose(two.get_layer("head").get_weights()[1], before - 0.5 * np.log(1 / 4), atol=1e-6)


def _random_four(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_model("vgg-bn", (24, 24, 1), 4, widths=(4, 8, 8, 8))


def test_an_ensemble_is_the_mean_of_its_members_and_saves_loads_and_takes_surgery_member_by_member(four, tmp_path):
    from emotion.guard import check_model_file
    from emotion.models.surgery import ensemble, members, transfer_weights

    model, x = four
    other = _random_four(5)
    p, q = (np.asarray(m.predict(x, verbose=0)) for m in (model, other))
    assert not np.allclose(p, q)
    both = ensemble([with_flip_tta(_copy(model)), with_flip_tta(_copy(other))])
    flip = np.flip(x, axis=2)
    want = (p + np.asarray(model.predict(flip, verbose=0)) + q + np.asarray(other.predict(flip, verbose=0))) / 4
    np.testing.assert_allclose(np.asarray(both.predict(x, verbose=0)), want, atol=1e-5)
    both.save(tmp_path / "both.keras")
    check_model_file(tmp_path / "both.keras")
    loaded = keras.saving.load_model(tmp_path / "both.keras", compile=False)
    assert len(members(loaded)) == 2
    np.testing.assert_allclose(np.asarray(loaded.predict(x, verbose=0)), want, atol=1e-5)

    two = restrict_classes(loaded, [3, 1])  # each member restricted, then averaged
    parts = [np.asarray(restrict_classes(m, [3, 1]).predict(x, verbose=0)) for m in members(loaded)]
    np.testing.assert_allclose(np.asarray(two.predict(x, verbose=0)), (parts[0] + parts[1]) / 2, atol=1e-5)
    adjust_logits(loaded, [100, 10, 1, 1], 0.5)
    assert not np.allclose(np.asarray(loaded.predict(x, verbose=0)), want, atol=1e-3), "every member moved"
    with pytest.raises(EmotionError, match="an ensemble of 2 networks"):
        transfer_weights(loaded, _random_four(6))


@pytest.mark.parametrize("shapes", [[(24, 24, 1)], [(24, 24, 1), (32, 32, 1)]])
def test_an_ensemble_of_one_or_of_other_shapes_is_refused(shapes):
    from emotion.models.surgery import ensemble

    with pytest.raises(EmotionError, match="an ensemble needs two or more models"):
        ensemble([build_model("vgg-bn", s, 4, widths=(4, 8, 8, 8)) for s in shapes])


def _copy(model: keras.Model) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


@pytest.mark.once  # a script in subprocesses: once is enough
def test_derive_model_averages_runs_and_takes_a_member_back_out(tmp_path):
    """scripts/derive_model.py --average (an ensemble of two run folders, their reference outputs the mean of
    theirs) and --member K (a member alone again, here restricted to two classes); other classes are refused."""
    import json
    import subprocess
    import sys

    from conftest import REPO

    from emotion.modelfile import read_meta, write_meta
    from emotion.training.runfolder import reference_inputs

    names = ["a", "b", "c", "d"]
    x = reference_inputs((24, 24, 1)).astype("float32")
    outputs = []
    for seed in (0, 1):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        model = _random_four(seed)
        model.save(run / "imageclassifier.keras")
        write_meta(run / "imageclassifier.keras", {"class_names": names, "faces": "crop", "reference": {
            "inputs": "numpy default_rng(0).integers(0, 256, (4, H, W, C), uint8)"}})
        (run / "metrics.json").write_text(json.dumps({"seed": seed}))
        outputs.append(np.asarray(model.predict(x, verbose=0)))

    def derive(*args):
        return subprocess.run([sys.executable, str(REPO / "scripts" / "derive_model.py"), *map(str, args)],
                              capture_output=True, text=True, cwd=tmp_path)

    r = derive(tmp_path / "run0", "--average", tmp_path / "run1", "--out", tmp_path / "both")
    assert r.returncode == 0, r.stderr[-2000:]
    meta = read_meta(tmp_path / "both" / "imageclassifier.keras")
    np.testing.assert_allclose(meta["reference"]["outputs"], (outputs[0] + outputs[1]) / 2, atol=1e-5)
    assert meta["derived_from"]["averaged_with"] == [str(tmp_path / "run1" / "imageclassifier.keras")]
    assert json.loads((tmp_path / "both" / "metrics.json").read_text())["seed"] == 0, "the first run's figures"

    r = derive(tmp_path / "both", "--member", 1, "--classes", "d,b", "--out", tmp_path / "one")
    assert r.returncode == 0, r.stderr[-2000:]
    p = outputs[1]
    np.testing.assert_allclose(np.asarray(read_meta(tmp_path / "one" / "imageclassifier.keras")["reference"]["outputs"])
                               [:, 0], p[:, 1] / (p[:, 3] + p[:, 1]), atol=1e-5)
    bad = derive(tmp_path / "both", "--member", 2, "--out", tmp_path / "none")
    assert bad.returncode != 0 and "has 2 member(s)" in bad.stderr and not (tmp_path / "none").exists()
