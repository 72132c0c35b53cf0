"""Data adapters (image folder, Stanford Cars devkit, HF datasets), splits and the leak check, on tiny local data."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from clipdemo.data import DataError, ImageDataset, Split
from clipdemo.data.cars import stanford_cars
from clipdemo.data.folder import image_folder
from clipdemo.data.hub import hub_dataset, split_of
from clipdemo.data.shapes import HELD_OUT, make_shapes
from clipdemo.data.sources import SourcePolicy, load_source
from clipdemo.data.splits import holdout, image_hash, plan_splits, split_hashes, subset, tutorial_split
from clipdemo.testing import class_colour, layout_folder, mat_annotations, write_minicars


def png(colour=(255, 0, 0), size=8, seed=None) -> bytes:
    pixels = np.full((size, size, 3), colour, dtype=np.uint8)
    if seed is not None:  # distinct pictures of one colour: the leak check compares pixels, not bytes
        noise = np.random.default_rng(seed).integers(-60, 61, pixels.shape)
        pixels = np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


# --- image folder -----------------------------------------------------------------------------------------


def test_folder_with_splits(tmp_path):
    root = layout_folder(tmp_path, {"train": {"dog": 3, "cat": 2}, "val": {"cat": 1}, "test": {"dog": 1, "cat": 1}})
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / "empty.jpg").write_bytes(b"")
    ds = image_folder(root)
    assert ds.class_names == ["cat", "dog"]
    assert list(ds.splits) == ["train", "validation", "test"]
    assert ds.splits["train"].labels == [0, 0, 0, 1, 1, 1]
    assert all(Path(p).suffix in (".png", ".jpg") for p in ds.splits["train"].images)  # not notes.txt
    assert ds.splits["validation"].labels == [0] and ds.splits["test"].labels == [0, 1]
    assert str(root / "train" / "cat" / "empty.jpg") in ds.splits["train"].images  # skipped where it is decoded
    assert ds.source.startswith("folder:") and load_source(str(root)).fingerprint == ds.fingerprint


def test_folder_flat_and_fingerprint(tmp_path):
    root = layout_folder(tmp_path, {"": {"b": 2, "a": 1}})
    ds = image_folder(root)
    assert list(ds.splits) == ["train"] and ds.class_names == ["a", "b"] and ds.splits["train"].labels == [0, 1, 1]
    before = ds.fingerprint
    (root / "a" / "new.png").write_bytes(png(seed=7))
    assert image_folder(root).fingerprint != before


def test_folder_bad_layouts(tmp_path):
    root = layout_folder(tmp_path / "x", {"train": {"cat": 1}, "test": {"cat": 1, "zebra": 1}})
    with pytest.raises(DataError, match="zebra"):
        image_folder(root)
    only_test = layout_folder(tmp_path / "y", {"test": {"cat": 1}})
    with pytest.raises(DataError, match="no train/"):
        image_folder(only_test)
    with pytest.raises(DataError, match="does not exist"):
        load_source(str(tmp_path / "nowhere"))


# --- Stanford Cars devkit ---------------------------------------------------------------------------------


def test_minicars_devkit(tmp_path):
    root = write_minicars(tmp_path / "cars", classes=4, per_class_train=6, per_class_test=3)
    ds = load_source(str(root))  # dispatches on devkit/cars_meta.mat
    assert ds.source.startswith("cars-devkit:")
    assert ds.class_names[:2] == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    assert len(ds.splits["train"]) == 24 and len(ds.splits["test"]) == 12 and ds.notes == []
    # 1-based classes in the file, 0-based here: each image's colour must be its label's colour
    raw = scipy.io.loadmat(root / "devkit" / "cars_train_annos.mat")["annotations"][0]
    assert sorted(ds.splits["train"].labels) == sorted(int(r["class"].item()) - 1 for r in raw)
    for ref, label in zip(ds.splits["test"].images, ds.splits["test"].labels):
        mean = np.asarray(Image.open(ref)).reshape(-1, 3).mean(0)
        nearest = np.argmin([np.abs(mean - class_colour(c, 4)).sum() for c in range(4)])
        assert nearest == label
    assert sorted(set(ds.splits["train"].labels)) == [0, 1, 2, 3]


def test_devkit_test_labels_placement(tmp_path):
    in_devkit = stanford_cars(write_minicars(tmp_path / "a", per_class_train=2, test_labels_in="devkit"))
    assert len(in_devkit.splits["test"]) == 12
    unlabelled = stanford_cars(write_minicars(tmp_path / "b", per_class_train=2, test_labels_in=None))
    assert list(unlabelled.splits) == ["train"] and "cars_test_annos_withlabels.mat" in unlabelled.notes[0]


def test_devkit_missing_meta_names_the_file(tmp_path):
    root = write_minicars(tmp_path / "cars", per_class_train=2, per_class_test=0)
    (root / "devkit" / "cars_meta.mat").unlink()
    with pytest.raises(DataError, match="cars_meta.mat"):
        stanford_cars(root)
    (root / "devkit" / "cars_meta.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="cars_meta.mat"):
        stanford_cars(root)


def test_devkit_class_out_of_range(tmp_path):
    root = write_minicars(tmp_path / "cars", classes=4, per_class_train=2, per_class_test=0)
    bad = [(1, "00001.jpg", (0, 0, 9, 9)), (5, "00002.jpg", (0, 0, 9, 9))]  # 5 > 4 classes
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": mat_annotations(bad)})
    with pytest.raises(DataError, match=r"cars_train_annos\.mat.*00002\.jpg.*class 5.*1\.\.4"):
        stanford_cars(root)


def test_devkit_unlabelled_annotations_refused(tmp_path):
    root = write_minicars(tmp_path / "cars", per_class_train=2, per_class_test=0)
    records = [(1, "00001.jpg", (0, 0, 9, 9))]
    unlabelled = mat_annotations(records, with_class=False)
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": unlabelled})
    with pytest.raises(DataError, match="lacks field.*class"):
        stanford_cars(root)


def test_devkit_missing_and_empty_images_counted(tmp_path):
    root = write_minicars(tmp_path / "cars", classes=4, per_class_train=6, per_class_test=0)
    (root / "cars_train" / "00003.jpg").unlink()
    (root / "cars_train" / "00007.jpg").write_bytes(b"")
    ds = stanford_cars(root)
    assert len(ds.splits["train"]) == 23  # the empty file is skipped and counted where it is decoded
    assert any("skipped 1 of 24" in n and "00003.jpg" in n for n in ds.notes)
    for f in (root / "cars_train").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="None of the 24 images"):
        stanford_cars(root)


# --- HF datasets, local ----------------------------------------------------------------------------------


def hf_split(n, names=("bulbasaur", "charmander", "squirtle"), offset=0, image_col="image", label_col="labels"):
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as HFImage

    features = Features({image_col: HFImage(), label_col: ClassLabel(names=list(names)), "id": Value("int64")})
    rows = {
        image_col: [png((80 * (i % 3), 50, 50), seed=offset + i) for i in range(n)],
        label_col: [i % len(names) for i in range(n)],
        "id": list(range(offset, offset + n)),
    }
    return Dataset.from_dict(rows, features=features)


def test_hub_adapter_on_parquet_folder(tmp_path):
    root = tmp_path / "pq"
    (root / "data").mkdir(parents=True)
    hf_split(6).to_parquet(root / "data" / "train-00000-of-00001.parquet")
    hf_split(3, offset=100).to_parquet(root / "data" / "test-00000-of-00001.parquet")
    ds = load_source(str(root))  # dispatches on the parquet files
    assert ds.class_names == ["bulbasaur", "charmander", "squirtle"]  # from the ClassLabel, auto-detected
    assert list(ds.splits) == ["train", "test"] and len(ds.splits["train"]) == 6
    assert ds.splits["train"].labels == [0, 1, 2, 0, 1, 2]
    assert all(isinstance(b, bytes) and b.startswith(b"\x89PNG") for b in ds.splits["test"].images)
    assert hub_dataset(str(root), splits=["test"]).splits.keys() == {"test"}
    with pytest.raises(DataError, match="no validation split"):
        hub_dataset(str(root), splits="validation")


def test_hub_adapter_on_converted_layout_with_configs(tmp_path):
    root = tmp_path / "conv"
    for config, n in (("mini", 3), ("full", 6)):
        for split in ("train", "validation", "test"):
            (root / config / split).mkdir(parents=True)
            hf_split(n).to_parquet(root / config / split / "0000.parquet")
    with pytest.raises(DataError, match="several configs.*full, mini"):
        hub_dataset(str(root))
    ds = hub_dataset(str(root), config="full")
    assert [len(s) for s in ds.splits.values()] == [6, 6, 6] and ds.source.endswith(":full")
    with pytest.raises(DataError, match="no config 'tiny'"):
        hub_dataset(str(root), config="tiny")


def test_hub_adapter_on_saved_dataset(tmp_path):
    from datasets import DatasetDict

    saved = DatasetDict({"train": hf_split(6, label_col="label"), "valid": hf_split(2, offset=50, label_col="label")})
    saved.save_to_disk(tmp_path / "saved")
    ds = load_source(str(tmp_path / "saved"))
    assert ds.source.startswith("hf-disk:") and list(ds.splits) == ["train", "validation"]
    assert ds.class_names == ["bulbasaur", "charmander", "squirtle"]
    assert isinstance(ds.splits["train"].images[0], bytes) and ds.splits["validation"].labels == [0, 1]


def test_hub_adapter_string_labels_and_explicit_columns(tmp_path):
    from datasets import Dataset, Features, Value
    from datasets import Image as HFImage

    feats = Features({"pic": HFImage(), "species": Value("string")})
    rows = {"pic": [png(seed=i) for i in range(3)], "species": ["dog", "cat", "dog"]}
    Dataset.from_dict(rows, features=feats).to_parquet(tmp_path / "train.parquet")
    ds = hub_dataset(str(tmp_path / "train.parquet"), label_column="species")
    assert ds.class_names == ["cat", "dog"] and ds.splits["train"].labels == [1, 0, 1]


@pytest.mark.parametrize(
    "rel, expected",
    [
        ("data/train-00000-of-00002.parquet", ("default", "train")),
        ("mini/test/0000.parquet", ("mini", "test")),
        ("default/partial-train/0001.parquet", ("default", "train")),
        ("full/pokemon-classification-validation.parquet", ("full", "validation")),
        ("val.parquet", ("default", "validation")),
        ("data/extra-0000.parquet", ("default", None)),
    ],
)
def test_split_of(rel, expected):
    assert split_of(rel)[:2] == expected


# --- HF Hub: offline, cached, and what gets downloaded ----------------------------------------------------


def test_hub_unreachable_fails_fast_and_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_source("someone/not-cached-anywhere")
    assert time.monotonic() - start < 3
    message = str(err.value)
    assert "someone/not-cached-anywhere" in message and "unreachable" in message and "local folder" in message


def fake_cache(cache: Path, repo_id: str, revision: str, files: dict[str, object]) -> Path:
    storage = cache / ("datasets--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (storage / "refs" / revision).parent.mkdir(parents=True, exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    snapshot = storage / "snapshots" / commit
    for rel, data in files.items():
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        data.to_parquet(snapshot / rel)
    return snapshot


def test_hub_offline_uses_the_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Pokemon: script-based, so its parquet conversion branch, config "mini" by default
    files = {f"{c}/{s}/0000.parquet": hf_split(3, offset=0) for c in ("mini", "full") for s in ("train", "test")}
    fake_cache(tmp_path, "fcakyon/pokemon-classification", "refs/convert/parquet", files)
    ds = hub_dataset("fcakyon/pokemon-classification", cache_dir=tmp_path)
    assert ds.source == "hf:fcakyon/pokemon-classification:mini" and list(ds.splits) == ["train", "test"]
    assert any("local HF cache" in n for n in ds.notes)
    # a generic id: main branch, push_to_hub layout
    fake_cache(tmp_path, "someone/pets", "main", {"data/train-00000-of-00001.parquet": hf_split(4)})
    assert len(hub_dataset("someone/pets", cache_dir=tmp_path, splits=["train"]).splits["train"]) == 4


def test_hub_downloads_only_the_needed_split_files(tmp_path, monkeypatch):
    import huggingface_hub

    import clipdemo.hub_access

    repo_files = [
        "README.md",
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
        "data/test-00000-of-00002.parquet",
        "data/test-00001-of-00002.parquet",
        "contrast/test-00000-of-00001.parquet",  # another config: must not be fetched
    ]
    snapshot = tmp_path / "snap"
    for i, rel in enumerate(repo_files[1:3]):
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        hf_split(2, offset=10 * i).to_parquet(snapshot / rel)
    asked = {}

    def fake_snapshot_download(repo_id, **kwargs):
        asked.update(kwargs, repo_id=repo_id)
        return str(snapshot)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(clipdemo.hub_access, "hub_reachable", lambda timeout=2.0: True)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id, **kw: repo_files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    ds = hub_dataset("tanganke/stanford_cars", splits=["train"])
    assert asked["repo_id"] == "tanganke/stanford_cars" and asked["repo_type"] == "dataset"
    assert sorted(asked["allow_patterns"]) == ["README.md", *repo_files[1:3]]
    assert len(ds.splits["train"]) == 4 and ds.source == "hf:tanganke/stanford_cars"


# --- splits -----------------------------------------------------------------------------------------------


def test_image_hash_is_of_file_bytes(tmp_path):
    data = png(seed=1)
    (tmp_path / "a.png").write_bytes(data)
    assert image_hash(tmp_path / "a.png") == image_hash(str(tmp_path / "a.png")) == image_hash(data)
    assert image_hash(png(seed=2)) != image_hash(data)


def test_the_plan_counts_a_duplicated_image(tmp_path):
    root = layout_folder(tmp_path, {"train": {"cat": 3, "dog": 2}, "test": {"cat": 2, "dog": 1}})
    shutil.copy(root / "train" / "dog" / "dog_1.png", root / "test" / "dog" / "copy.png")
    assert plan_splits(image_folder(root)).overlap == 1


def mini_like(n=12, classes=4) -> ImageDataset:
    """Pokemon-mini-like: train, validation and test are the same images."""
    same = Split([png(seed=i) for i in range(n)], [i % classes for i in range(n)])
    splits = {name: Split(list(same.images), list(same.labels)) for name in ("train", "validation", "test")}
    return ImageDataset([f"c{i}" for i in range(classes)], splits, "test:mini", "fp0", ["loaded"])


def hashes(plan, part):
    return set(split_hashes(subset(plan.dataset.splits[part.split], part.indices)))


def test_a_duplicated_test_split_is_replaced_by_a_clean_seeded_one():
    ds = mini_like()
    train_hashes = set(split_hashes(ds.splits["train"]))
    assert sum(h in train_hashes for h in split_hashes(ds.splits["test"])) == 12
    plan = plan_splits(ds, seed=0)
    assert plan.leak.startswith("WARNING: the test split overlaps training: 12 of 12 test images")
    assert ds.notes == ["loaded"] and len(ds.splits["test"]) == 12  # the input is untouched
    assert hashes(plan, plan.evaluation).isdisjoint(hashes(plan, plan.train) | hashes(plan, plan.validation))
    assert hashes(plan, plan.validation).isdisjoint(hashes(plan, plan.train))
    assert len(plan.evaluation) + len(plan.validation) + len(plan.train) == 12  # each distinct image once
    assert plan.dataset.fingerprint != ds.fingerprint
    held = hashes(plan, plan.evaluation)
    again, other = plan_splits(ds, seed=0), plan_splits(ds, seed=1)
    assert hashes(again, again.evaluation) == held and hashes(other, other.evaluation) != held  # seeded


def test_the_leak_check_other_cases():
    ds = mini_like()
    # a little overlap: only the duplicates leave the evaluation
    fresh = [png(seed=100 + i) for i in range(5)]
    ds.splits["test"] = Split(fresh + [ds.splits["train"].images[0]], [0, 1, 2, 3, 0, 0])
    del ds.splits["validation"]
    plan = plan_splits(ds)
    assert "WARNING: 1 of 6 'test' images are copies" in plan.leak and len(plan.evaluation) == 5
    assert plan.overlap == 1 and plan.dataset is ds
    # no overlap: no note
    ds.splits["test"] = Split(fresh, [0, 1, 2, 3, 0])
    assert plan_splits(ds).leak == ""
    # no test split: carved from train, never overlapping it
    del ds.splits["test"]
    carved = plan_splits(ds)
    assert carved.evaluation.split == "train" and "no test split" in carved.description
    assert set(carved.evaluation.indices).isdisjoint(carved.train.indices + carved.validation.indices)
    # one image per class (Pokemon mini's case): a seeded random held-out set instead of an empty one
    one_each = Split([png(seed=i) for i in range(5)], [0, 1, 2, 3, 4])
    singles = ImageDataset(["a", "b", "c", "d", "e"], {"train": one_each}, "s", "f")
    assert len(plan_splits(singles).evaluation) == 1


def test_one_class_is_refused_in_one_sentence():
    one = Split([png(seed=i) for i in range(6)], [0] * 6)
    with pytest.raises(DataError, match=r"has one class \(a\): a classifier needs at least two\."):
        plan_splits(ImageDataset(["a"], {"train": one}, "one", "f"))


def test_holdout_is_the_one_rule():
    labels = [0] * 10 + [1] * 4 + [2] * 1
    kept, held = holdout(range(len(labels)), labels, 0.2, seed=1)
    assert sorted(labels[i] for i in held) == [0, 0, 1]  # 2 of 10, at least 1 of 4, none of the single one
    assert len(kept) + len(held) == len(labels) and set(kept).isdisjoint(held)
    assert holdout(range(15), labels, 0.2, seed=1)[1] == held and holdout(range(15), labels, 0.2, seed=2)[1] != held
    # 25 images of a class at 10%: round(2.5) = 3, halves up (scratch and heads agree)
    assert len(holdout(range(25), [0] * 25, 0.1, seed=0)[1]) == 3


def test_tutorial_split_matches_the_notebook():
    from sklearn.model_selection import train_test_split

    rows = list(range(8144))
    train, held = tutorial_split(rows)
    assert (len(train), len(held)) == (7736, 408)
    # same rows, same order, as the tutorial's call on the annotation array
    assert list(held) == train_test_split(rows, test_size=0.05, random_state=3)[1]
    # its printed 7349 / 387: the split cell ran twice
    train2, held2 = tutorial_split(train)
    assert (len(train2), len(held2)) == (7349, 387)


# --- dispatch and confinement -----------------------------------------------------------------------------


def test_data_root_confinement(tmp_path):
    root = tmp_path / "data"
    layout_folder(root / "pets", {"train": {"cat": 1}})
    outside = layout_folder(tmp_path / "secret", {"train": {"cat": 1}})
    (root / "escape").symlink_to(outside, target_is_directory=True)
    assert load_source("pets", policy=SourcePolicy.confined(root)).class_names == ["cat"]
    assert load_source(str(root / "pets"), policy=SourcePolicy.confined(root)).splits["train"].labels == [0]
    for spec in ("../secret", "pets/../../secret", str(outside), "escape", "~/x"):
        with pytest.raises(DataError, match="refused|does not exist"):
            load_source(spec, policy=SourcePolicy.confined(root))
    with pytest.raises(DataError, match="outside the data folder"):
        load_source(str(outside), policy=SourcePolicy.confined(root))
    with pytest.raises(DataError, match="does not exist inside"):
        load_source("./missing", policy=SourcePolicy.confined(root))


def test_builtin_shapes_dispatch(monkeypatch):
    shapes = pytest.importorskip("clipdemo.data.shapes")
    tiny = ImageDataset(["red circle"], {"train": Split([png()], [0])}, "shapes", "fp")
    monkeypatch.setattr(shapes, "shapes_dataset", lambda seed=0: tiny)  # dispatch only: generating takes seconds
    assert load_source("shapes") is tiny


def test_hub_shaped_name_under_a_data_root_never_reads_the_working_directory(tmp_path, monkeypatch):
    from clipdemo.data import DataError
    from clipdemo.data.sources import load_source

    (tmp_path / "root").mkdir()
    elsewhere = tmp_path / "cwd"
    (elsewhere / "secret" / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(elsewhere / "secret" / "train" / "a" / "1.png")
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError):
        load_source("secret", policy=SourcePolicy.confined(tmp_path / "root"))


def test_an_image_folder_keeps_extra_splits_for_evaluation(tmp_path):
    # demo-data's layout: unseen/ holds classes train never has; they join the class list after train's
    root = make_shapes(tmp_path / "shapes", per_class={"train": 2, "validation": 1, "test": 1, "unseen": 1})
    ds = image_folder(root)
    assert list(ds.splits) == ["train", "validation", "test", "unseen"]
    assert len(ds.class_names) == 30 and ds.class_names[24:] == sorted(HELD_OUT)
    assert sorted(ds.class_names[i] for i in ds.splits["unseen"].labels) == sorted(HELD_OUT)
    assert not set(ds.splits["train"].labels) & set(ds.splits["unseen"].labels)
    assert any("unseen: an extra split of 6 images" in n for n in ds.notes)
    assert not any("have no images" in n for n in ds.notes)
