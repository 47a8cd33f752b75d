"""FER+-style votes: the file read, matched by split and file name, and turned into soft training targets."""

import pytest
from conftest import write_image

from emotion.config import DataConfig
from emotion.data.datamodule import EmotionDataModule
from emotion.data.votes import read_votes, soft_targets
from emotion.errors import EmotionError

pytestmark = pytest.mark.once  # touches no Keras backend
HEADER = "split,file,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
NAMES = ["happy", "sad"]


def votes_file(tmp_path, rows):
    path = tmp_path / "votes.csv"
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def presplit(tmp_path, n=2):
    root = tmp_path / "faces"
    for split in ("train", "val", "test"):
        for c, cls in enumerate(NAMES):
            for i in range(n):
                write_image(root / split / cls / f"{split}{cls}{i}.png", size=(12, 12), seed=hash((split, c, i)) % 999)
    return root


def test_columns_match_class_folders_by_fer_plus_words_and_single_votes_are_dropped(tmp_path):
    # happiness 6, sadness 3, anger 1 (one vote: an outlier), unknown 2: neither is a class here
    table = read_votes(votes_file(tmp_path, ["train,a.png,0,6,0,3,1,0,0,0,2,0"]), ["angry", "happy", "sad"])
    assert table[("train", "a.png")].tolist() == [1, 6, 3]
    t = soft_targets(table, ["x/train/happy/a.png"], [1], 3)
    assert t.tolist() == [[0.0, pytest.approx(6 / 9), pytest.approx(3 / 9)]]


def test_a_face_whose_votes_name_no_class_keeps_its_folder_label(tmp_path):
    # the majority protocol would drop this face (its votes are "not a face"); if a folder has it, its label stands
    table = read_votes(votes_file(tmp_path, ["train,b.png,0,0,0,1,0,0,0,0,0,9"]), NAMES)
    assert soft_targets(table, ["r/train/sad/b.png"], [1], 2).tolist() == [[0.0, 1.0]]


def test_rows_are_matched_by_split_and_a_missing_row_is_one_line_naming_the_face(tmp_path):
    table = read_votes(votes_file(tmp_path, ["val,c.png,0,5,0,5,0,0,0,0,0,0"]), NAMES)
    with pytest.raises(EmotionError, match=r"no row for r/train/happy/c.png \(split 'train', file 'c.png'\)"):
        soft_targets(table, ["r/train/happy/c.png"], [0], 2)
    # a folder that is not pre-split matches by file name alone
    assert soft_targets(table, ["r/happy/c.png"], [0], 2, presplit=False).tolist() == [[0.5, 0.5]]


@pytest.mark.parametrize("rows, message", [
    (["train,a.png,1,2"], "line 2: 4 fields, the header has 12"),
    (["train,a.png,0,x,0,0,0,0,0,0,0,0"], "not a number"),
    (["train,a.png,0,-3,0,0,0,0,0,0,0,0"], "non-negative"),
])
def test_bad_votes_files_are_one_line_errors(tmp_path, rows, message):
    with pytest.raises(EmotionError, match=message):
        read_votes(votes_file(tmp_path, rows), NAMES)


def test_a_votes_file_without_a_column_for_a_class_is_refused(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("split,file,happiness\ntrain,a.png,3\n")
    with pytest.raises(EmotionError, match=r"no column for class\(es\) \['sad'\]"):
        read_votes(path, NAMES)


def test_the_data_module_trains_on_the_votes_and_keeps_val_and_test_labels(tmp_path):
    root = presplit(tmp_path)
    rows = []
    for split in ("train", "val", "test"):
        for cls in NAMES:
            for i in range(2):
                happy, sad = (7, 3) if cls == "happy" else (2, 8)
                rows.append(f"{split},{split}{cls}{i}.png,0,{happy},0,{sad},0,0,0,0,0,0")
    rows.append("train,dropped-by-the-protocol.png,0,0,0,0,0,0,0,0,5,5")  # a row with no face in the folders
    dm = EmotionDataModule(DataConfig(data=str(root), image_size=12, votes=str(votes_file(tmp_path, rows)),
                                      cache="off"), progress=False).setup()
    x, y = dm.train_dataloader()[0]
    # two classes: the target is P(sad) from the votes, 0.3 for a happy face and 0.8 for a sad one
    assert sorted(y[:, 0].tolist()) == pytest.approx([0.3, 0.3, 0.8, 0.8])
    _, yv = dm.val_dataloader()[0]
    assert sorted(yv[:, 0].tolist()) == [0.0, 0.0, 1.0, 1.0]


def test_the_votes_file_is_read_before_any_image_is_decoded(tmp_path):
    root = presplit(tmp_path)
    with pytest.raises(EmotionError, match="votes file not found"):
        EmotionDataModule(DataConfig(data=str(root), votes=str(tmp_path / "nope.csv"), cache="off")).setup()
