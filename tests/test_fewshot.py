"""Your classes: a few-shot head learns noisy colour classes a tiny random CLIP tells apart, the slider moves
between zero-shot and the head, leave-one-out scores it against zero-shot, bad input is one sentence, and the
downloaded checkpoint is one ``python -m clipdemo eval`` and the Cars tab accept. Also: ``train head`` on a
folder of 3 classes x 4 images (the CLI's few-shot path)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from clipdemo.cli import main
from clipdemo.encoders import load_encoder
from clipdemo.fewshot import FewShotError, examples_from_zip, leave_one_out, save_head, teach, zip_folder
from clipdemo.heads import HeadClassifier
from clipdemo.serving import Served
from clipdemo.settings import Settings
from clipdemo.testing import colour_folder, colour_image, encoded
from clipdemo.ui import fewshot_tab

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = ("apple", "leaf", "sky")


@pytest.fixture(scope="module")
def taught(tiny_clip):
    examples = {name: [colour_image(name, 100 * k + i) for i in range(4)] for k, name in enumerate(CLASSES)}
    return teach(load_encoder(str(tiny_clip)), examples)


def scored(predictions) -> list[tuple[str, float]]:
    return [(p.label, p.score) for p in predictions]


def approx_scored(predictions):
    """The same labels in the same order, each score within 1e-4."""
    return [(label, pytest.approx(score, abs=1e-4)) for label, score in scored(predictions)]


def test_head_learns_three_classes_from_four_images_each(taught):
    assert taught.class_names == list(CLASSES) and taught.counts == [4, 4, 4]
    assert taught.fit.name == "zeroshot-blend" and taught.fit.hyperparameters["alpha"] > 0  # not zero-shot
    loo = leave_one_out(taught)
    assert loo.n == 12 and loo.head_acc == 1.0 and loo.head_acc > loo.zeroshot_acc  # zero-shot: 8/12 here
    for k, name in enumerate(CLASSES):
        blend, _, head = taught.predict(colour_image(name, 9000 + k), weight=1.0)
        assert blend[0].label == head[0].label == name


def test_slider_moves_from_zero_shot_to_the_head(taught):
    x = taught.features
    zs_only, zs, head = taught.probabilities(x, 0.0)
    head_only, _, _ = taught.probabilities(x, 1.0)
    assert torch.allclose(zs_only, zs, atol=1e-5) and torch.allclose(head_only, head, atol=1e-5)
    middle, _, _ = taught.probabilities(x, 0.5)
    truth = taught.labels
    pick = lambda p: p[torch.arange(len(truth)), truth]
    assert (pick(zs_only) <= pick(middle) + 1e-6).all() and (pick(middle) <= pick(head_only) + 1e-6).all()


def test_downloaded_head_is_a_cars_head_checkpoint_eval_accepts(taught, tiny_clip, tmp_path, capsys, monkeypatch):
    folder = save_head(taught, tmp_path / "fewshot-head")
    clf = HeadClassifier(folder, backbone=str(tiny_clip))
    image = colour_image("leaf", 777)  # a leaf that zero-shot CLIP calls "sky": the two columns must differ
    head, zeroshot = clf.predict(image, k=3)
    _, taught_zeroshot, taught_head = taught.predict(image, weight=1.0, k=3)
    assert head[0].label == "leaf" and scored(head) == approx_scored(taught_head)  # the head, as taught
    assert zeroshot[0].label != "leaf" and scored(zeroshot) == approx_scored(taught_zeroshot)  # CLIP's zero-shot
    with zipfile.ZipFile(zip_folder(folder, tmp_path / "head.zip")) as z:
        assert sorted(z.namelist()) == [
            "fewshot-head/card.json",
            "fewshot-head/config.json",
            "fewshot-head/weights.safetensors",
        ]
    data = colour_folder(tmp_path / "data" / "train", CLASSES, 2, seed=50)
    colour_folder(data.parent / "test", CLASSES, 3, seed=5000)
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    assert main(["eval", "--checkpoint", str(folder), "--data", str(data.parent), "--split", "test"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["n"] == 9 and metrics["acc1"] == 1.0


def test_train_head_cli_on_three_classes_of_four_images(tiny_clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    data = colour_folder(tmp_path / "few", CLASSES, 4)
    assert (
        main(
            [
                "train",
                "head",
                "--data",
                str(data),
                "--backbone",
                str(tiny_clip),
                "--split",
                "official",
                "--out",
                str(tmp_path / "head"),
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["acc1"] == 1.0 and result["n"] == 3 and result["best_val_acc"] > result["zeroshot_val_acc"]


@pytest.mark.parametrize(
    "examples, message",
    [
        ({"apple": ["x"]}, "at least 2 classes"),
        ({"apple": [colour_image("apple", 1)], "leaf": []}, "'leaf' has no images"),
        ({"apple": [colour_image("apple", 1)] * 500, "leaf": [colour_image("leaf", 1)]}, "500 images; at most 16"),
        ({f"c{i}": [b"x"] for i in range(21)}, "Too many classes: 21"),
        ({"apple": [colour_image("apple", 1)], "leaf": [b"<html>", b"junk"]}, "None of class 'leaf'"),
    ],
)
def test_bad_input_is_one_sentence(tiny_clip, examples, message):
    with pytest.raises(FewShotError, match=message):
        teach(load_encoder(str(tiny_clip)), examples)


def test_junk_files_among_images_are_skipped_and_named(tiny_clip, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    examples = {
        "apple": [colour_image("apple", i) for i in range(3)] + [str(junk)],
        "leaf": [colour_image("leaf", i) for i in range(3)],
    }
    taught = teach(load_encoder(str(tiny_clip)), examples)
    assert taught.counts == [3, 3] and len(taught.skipped) == 1 and taught.skipped[0].startswith("apple/notes.txt")


@pytest.mark.parametrize("top", ["", "my-classes/"])
def test_zip_of_class_folders(tmp_path, top):
    path = tmp_path / "classes.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name in ("apple", "leaf"):
            for i in range(2):
                z.writestr(f"{top}{name}/{i}.png", encoded(colour_image(name, i), "PNG"))
        z.writestr(f"{top}README.txt" if top else "README.txt", "ignored: not in a class folder")
        z.writestr("__MACOSX/apple/._0.png", "resource fork")
    examples = examples_from_zip(path)
    assert sorted(examples) == ["apple", "leaf"] and [len(v) for v in examples.values()] == [2, 2]


def test_not_a_zip_is_one_sentence(tmp_path):
    (tmp_path / "x.zip").write_text("nope")
    with pytest.raises(FewShotError, match="not a zip archive"):
        examples_from_zip(tmp_path / "x.zip")


# --- the tab's handlers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_clip, tmp_path_factory):
    return Served(Settings(model=str(tiny_clip), checkpoint_dir=tmp_path_factory.mktemp("ckpts")))


def rows(tmp_path, classes=CLASSES, per_class=4):
    folder = colour_folder(tmp_path / "up", classes, per_class)
    names = list(classes) + [""] * (fewshot_tab.SLOTS - len(classes))
    files = [sorted(str(p) for p in (folder / c).iterdir()) for c in classes] + [None] * (
        fewshot_tab.SLOTS - len(classes)
    )
    return names + files


def test_handlers_teach_classify_download_and_write_nothing_to_checkpoints(served, tmp_path):
    state, status, loo = fewshot_tab.teach_handler(served, None, *rows(tmp_path))
    assert "Taught 3 classes on 12 images" in status and "leave-one-out on 12 images" in loo and "**100.0%**" in loo
    image = tmp_path / "new.png"
    colour_image("sky", 4242).save(image)
    blend, zeroshot, verdict = fewshot_tab.classify_handler(state, str(image), 1.0)
    assert max(blend, key=blend.get) == "sky" and "the head says **sky**" in verdict
    archive = Path(fewshot_tab.download_handler(state))  # the zip the download button holds after a teach
    with zipfile.ZipFile(archive) as z:
        assert json.loads(z.read("fewshot-head/config.json"))["kind"] == "clip-head"
    assert not any(served.settings.checkpoint_dir.iterdir())  # the public tab wrote nothing there


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r[:1] + [""] * 3 + r[4:5] + [None] * 3, "at least 2 classes"),  # one class
        (lambda r: r[:4] + [r[4], [], None, None], "'leaf' has no images"),  # 0 images
        (lambda r: [""] + r[1:], r"Class row 1 has 4 image\(s\) but no name"),
        (lambda r: [""] * 4 + [None] * 4, "Name at least 2 classes"),
    ],
)
def test_handler_errors(served, tmp_path, change, message):
    with pytest.raises(FewShotError, match=message):
        fewshot_tab.teach_handler(served, None, *change(rows(tmp_path)))


def test_classify_before_teaching_says_so():
    with pytest.raises(FewShotError, match="Teach your classes first"):
        fewshot_tab.classify_handler(None, "x.png", 0.5)


def test_downloaded_head_promoted_by_admin_is_served_by_the_cars_tab(taught, tiny_clip, tmp_path):
    """Unzipped into the checkpoint dir, the head is a version like any other: promoted, then the Cars tab serves it."""
    from clipdemo.checkpoints import list_versions, promote
    from clipdemo.ui import cars_tab

    root = tmp_path / "ckpts"
    with zipfile.ZipFile(zip_folder(save_head(taught, tmp_path / "fewshot-head"), tmp_path / "head.zip")) as z:
        z.extractall(root / "cars-head")
    assert [v["version"] for v in list_versions(root, "cars-head")] == ["fewshot-head"]
    promote(root, "cars-head", "fewshot-head")
    image = tmp_path / "sky.png"
    colour_image("sky", 555).save(image)
    head, zeroshot, verdict, card = cars_tab.classify(
        Served(Settings(model=str(tiny_clip), checkpoint_dir=root)), str(image)
    )
    _, taught_zeroshot, taught_head = taught.predict(image, weight=1.0, k=3)
    assert head == pytest.approx(dict(scored(taught_head))) and max(head, key=head.get) == "sky"
    assert zeroshot == pytest.approx(dict(scored(taught_zeroshot)))  # zero-shot CLIP over the head's classes
    assert verdict.startswith("**They agree**") and "both say **sky**" in verdict  # zero-shot also says sky here
    assert "fewshot-head" in card
