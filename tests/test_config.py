"""Settings are declared once (emotion.config) and the command line is made from them."""

import dataclasses

import pytest

from emotion import config
from emotion.cli import build_parser, main
from emotion.config import load_config, settings, to_yaml
from emotion.errors import EmotionError

pytestmark = pytest.mark.once  # touches no Keras backend: `nox -s tests` runs it once


def _fit_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices["fit"], sub.choices


def test_every_setting_is_one_flag_of_fit_and_cv():
    fit, commands = _fit_parser()
    for name in ("fit", "cv"):
        dests = [a.dest for a in commands[name]._actions]
        assert len(dests) == len(set(dests)), f"{name}: a flag declared twice"
        for key, _ in settings():
            assert dests.count(config.dest_of(key)) == 1, f"{name} lacks (or repeats) {key}"
    flags = [s for a in fit._actions for s in a.option_strings]
    assert len(flags) == len(set(flags))


def test_print_config_round_trips(tmp_path, capsys):
    assert main(["fit", "--data", "d", "--epochs", "3", "--lr", "0.01", "--classes", "happy,sad",
                 "--preset-args", "{dropout: 0.2}", "--no-tensorboard", "--quiet", "--print-config"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "c.yaml").write_text(text)
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.trainer.epochs == 3 and cfg.model.learning_rate == 0.01 and cfg.data.classes == ["happy", "sad"]
    assert cfg.model.preset_args == {"dropout": 0.2} and cfg.trainer.tensorboard is False and cfg.trainer.verbose == 2
    assert to_yaml(cfg) == text
    assert main(["fit", "--config", str(tmp_path / "c.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == text


@pytest.mark.parametrize("raw, text", [
    ({"learning_rate": 0.1}, "'learning_rate' in the top level: it belongs in the 'model' section"),
    ({"trainer": {"lr_schedule": "cosine"}}, "it belongs in the 'model' section"),
    ({"model": {"learnig_rate": 0.1}}, "did you mean 'learning_rate'"),
    ({"trainer": {"epochs": "ten"}}, "trainer.epochs must be int"),
    ({"trainer": {"epochs": 0}}, "trainer.epochs must be an integer from 1 to 100000"),
    ({"data": {"color": "cmyk"}}, "data.color must be one of rgb, grayscale"),
    ({"data": {"split": [0.5, 0.5]}}, "split must be three fractions"),
    ({"trainer": {"logit_adjust": 1.5}}, "trainer.logit_adjust must be a number in .0, 1., got 1.5"),
    ({"data": {"faces": "crop", "margin": 3}}, "data.margin must be a number in .0, 2. .emotion.faces"),
    ({"data": {"margin": 0.2}}, "data.margin applies to faces: crop (the square cut around each face found)"),
])
def test_config_mistakes_are_named(tmp_path, raw, text):
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(EmotionError, match=text.replace("(", r"\(").replace(")", r"\)")):
        load_config(tmp_path / "c.yaml")


def test_abbreviated_flags_are_refused(capsys):
    assert main(["fit", "--epoch", "1", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --epoch 1 (did you mean --epochs?)" in err and len(err.strip().splitlines()) == 1
    assert main(["fit", "--batchsize", "8"]) == 2
    assert "did you mean --batch-size?" in capsys.readouterr().err


def test_the_dataclasses_declare_help_for_every_setting():
    for key, f in settings():
        assert f.metadata.get("help"), key
    assert {f.name for f in dataclasses.fields(config.DataConfig)} >= {"detector"}
    from emotion.faces.detect import DETECTORS

    detector = next(f for k, f in settings() if k == "data.detector")
    assert tuple(detector.metadata["choices"]) == tuple(DETECTORS)
