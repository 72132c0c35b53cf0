"""Issue 26, through the product: a leak check that sees pictures, not bytes; unreadable files counted before any
overlap; hostile zips answered in the upload's own sentence; promote refusing a version a live run is writing."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdemo.cli import main
from clipdemo.data import ImageDataset, Split
from clipdemo.data.folder import image_folder
from clipdemo.data.phash import Looks, first_matches, look
from clipdemo.data.shapes import shapes_dataset
from clipdemo.data.splits import dataset_looks, plan_splits
from clipdemo.settings import REPO_ROOT
from clipdemo.testing import run_cli

CLASSES = ("apple", "leaf", "sky")
TINTS = {"apple": (60, -20, -20), "leaf": (-20, 50, -20), "sky": (-20, -10, 60)}


def photo(name: str, seed: int, size: int = 96) -> Image.Image:
    """A photo-like picture: a random smooth colour field (its own for each seed) tinted by the class."""
    rng = np.random.default_rng(seed)
    grid = Image.fromarray(rng.integers(30, 225, (5, 5, 3)).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    pixels = np.asarray(grid, np.int16) + np.array(TINTS[name]) + rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def photo_folder(root: Path, train: int = 6, test: int = 3) -> Path:
    seed = 0
    for split, n in (("train", train), ("test", test)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                photo(name, seed).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return tmp_path


# --- re-encoded copies are copies ----------------------------------------------------------------------------


@pytest.fixture
def resaved(env):
    """3 classes, train 6 each; test 3 fresh photos each plus 2 training photos each re-saved as JPEG at 2/3 size."""
    root = photo_folder(env / "resaved")
    for name in CLASSES:
        for i in range(2):
            original = Image.open(root / "train" / name / f"{i}.png")
            original.resize((64, 64), Image.LANCZOS).save(root / "test" / name / f"copy-{i}.jpg", quality=70)
    return root


LEAK = "WARNING: 6 of 15 'test' images are copies of training or validation images"


def named_pair(text: str) -> bool:
    return any(f"test/{n}/copy-0.jpg is train/{n}/0.png" in text for n in CLASSES)


def test_resaved_copies_are_left_out_of_train_scratch_and_eval(resaved, capsys):
    out = resaved.parent / "s"
    code, result, err = run_cli(capsys, "train", "scratch", "--data", resaved, "--epochs", "1", "--out", out)
    assert code == 0, err
    assert LEAK in err and LEAK in result["leak"] and named_pair(result["leak"])
    assert result["n"] == 9  # the 9 fresh test photos only
    card = json.loads((out / "card.json").read_text())
    assert LEAK in card["split_plan"]["leak"] and len(card["split_plan"]["pairs"]) == 6
    assert sorted(result["copies"]) == sorted(card["split_plan"]["pairs"])
    code, metrics, err = run_cli(capsys, "eval", "--checkpoint", out, "--data", resaved, "--split", "test")
    assert code == 0, err
    assert LEAK in err and metrics["overlap"] == 6 and metrics["n"] == 9 and named_pair(metrics["leak"])
    assert all([f"test/{n}/copy-1.jpg", f"train/{n}/1.png"] in metrics["copies"] for n in CLASSES)
    assert metrics["acc1"] == pytest.approx(result["acc1"])


def test_resaved_copies_are_left_out_of_train_head_and_eval(resaved, tiny_clip, capsys):
    out = resaved.parent / "h"
    code, result, err = run_cli(
        capsys, "train", "head", "--data", resaved, "--backbone", tiny_clip, "--split", "official", "--out", out
    )
    assert code == 0, err
    assert LEAK in err and named_pair(result["leak"]) and result["n"] == result["zeroshot"]["n"] == 9
    code, metrics, err = run_cli(capsys, "eval", "--checkpoint", out, "--data", resaved, "--split", "test")
    assert code == 0, err
    assert LEAK in err and metrics["n"] == 9 and metrics["overlap"] == 6
    assert metrics["acc1"] == pytest.approx(result["acc1"])


def test_a_warm_plan_reads_what_it_saw_from_the_cache(resaved, tmp_path, monkeypatch):
    from clipdemo.data import phash

    cache = tmp_path / "cache"
    first = plan_splits(image_folder(resaved), cache_dir=cache)
    phash._memo.clear()
    monkeypatch.setattr(phash, "load_thumbnail", lambda *a, **k: pytest.fail("decoded on a warm run"))
    again = plan_splits(image_folder(resaved), cache_dir=cache)
    assert again.leak == first.leak and again.pairs == first.pairs and again.overlap == 6


# --- distinct images are never copies ------------------------------------------------------------------------


def test_the_built_in_data_reports_no_overlap():
    dataset = shapes_dataset()
    plan = plan_splits(dataset)
    assert plan.leak == "" and plan.overlap == 0 and plan.pairs == []
    assert {k: len(p) for k, p in plan.parts().items()} == {
        "train": 24 * 60,
        "validation": 24 * 10,
        "evaluation": 24 * 10,
        "unseen": 6 * 10,
    }


def real_images() -> list[Image.Image]:
    """The repository's real photos and screenshots, and non-overlapping tiles of them (distinct pictures)."""
    files = sorted((REPO_ROOT / "examples").glob("*.jpg")) + sorted((REPO_ROOT / "docs").glob("*.png"))
    assert len(files) >= 5
    images = [Image.open(f).convert("RGB") for f in files]
    tiles = []
    for image in images:
        side = min(image.size) // 2
        for x in range(0, image.width - side + 1, side):
            for y in range(0, image.height - side + 1, side):
                tiles.append(image.crop((x, y, x + side, y + side)))
    return images + tiles


def test_a_folder_of_distinct_real_images_reports_no_overlap(tmp_path):
    images = real_images() + [photo(CLASSES[i % 3], 1000 + i) for i in range(30)]
    for i, image in enumerate(images):
        split = "test" if i % 4 == 0 else "train"
        folder = tmp_path / "real" / split / ("even" if i % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i}.jpg", quality=85)
    plan = plan_splits(image_folder(tmp_path / "real"))
    assert plan.leak == "" and plan.overlap == 0
    looks = dataset_looks(image_folder(tmp_path / "real"))
    every = Looks.concat(list(looks.values()))
    assert (first_matches(every, every, earlier_only=True) < 0).all()  # no pair at all, whatever the split


def test_every_kind_of_copy_is_caught_and_blank_images_match_only_their_bytes():
    original = photo("leaf", 7, size=160)
    copies = []
    for quality in (95, 75, 50, 40):
        for scale in (1.0, 0.5, 0.25):
            buf = io.BytesIO()
            size = (int(160 * scale), int(160 * scale))
            original.resize(size, Image.LANCZOS).save(buf, "JPEG", quality=quality)
            copies.append(buf.getvalue())
    buf = io.BytesIO()
    original.save(buf, "PNG")
    refs = Looks.of_rows(["original"], [look(buf.getvalue())])
    found = first_matches(Looks.of_rows([str(i) for i in range(len(copies))], [look(c) for c in copies]), refs)
    assert (found == 0).all()
    blank_a, blank_b = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(blank_a, "PNG")
    Image.new("RGB", (41, 40), "red").save(blank_b, "PNG")
    rows = [look(blank_a.getvalue()), look(blank_b.getvalue()), look(blank_a.getvalue())]
    blanks = Looks.of_rows(["a", "b", "a again"], rows)  # a blank frame has no picture to compare: bytes only
    assert first_matches(blanks, blanks, earlier_only=True).tolist() == [-1, -1, 0]


# --- unreadable first ----------------------------------------------------------------------------------------


def test_broken_files_duplicated_across_classes_are_all_skipped_never_copies(env, capsys):
    root = photo_folder(env / "broken")
    buf = io.BytesIO()
    photo("sky", 99).save(buf, "JPEG")
    broken = {
        "empty.png": b"",
        "page.png": b"<!doctype html><html><body>Not found</body></html>",
        "truncated.jpg": buf.getvalue()[: len(buf.getvalue()) // 2],
    }
    places = {
        "empty.png": ("train/apple", "train/leaf", "test/apple"),
        "page.png": ("train/sky", "test/leaf", "test/sky"),
        "truncated.jpg": ("train/leaf", "test/sky"),
    }
    for name, folders in places.items():
        for folder in folders:
            (root / folder / name).write_bytes(broken[name])
    code, result, err = run_cli(capsys, "train", "scratch", "--data", root, "--epochs", "1", "--out", env / "s")
    assert code == 0, err
    assert sum(result["skipped"].values()) == 8 and result["skipped"]["evaluation"] == 4
    assert result["leak"] == "" and "copies" not in err and result["n"] == 9
    assert "empty.png" in err and "page.png" in err and "truncated.jpg" in err  # named as unreadable
    code, metrics, err = run_cli(capsys, "eval", "--checkpoint", env / "s", "--data", root, "--split", "test")
    assert code == 0, err
    assert metrics["skipped"] == 4 and metrics["overlap"] == 0 and metrics["n"] == 9


# --- promote refuses a version a live run is writing ---------------------------------------------------------

LIVE_RUN = textwrap.dedent(
    """
    import sys, torch
    from clipdemo.checkpoints import claim_version, save_checkpoint
    claim = claim_version(sys.argv[1], "scratch", "live")
    save_checkpoint(claim.folder, {"w": torch.zeros(2)}, {"kind": "scratch-clip"}, {"classes": ["a", "b"]})
    print(claim.folder.name, flush=True)
    sys.stdin.read()  # a run still training: holds its claim until told to stop
    claim.release()
    """
)


@pytest.fixture
def live_run(env):
    root = env / "checkpoints"
    proc = subprocess.Popen(
        [sys.executable, "-c", LIVE_RUN, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    version = proc.stdout.readline().strip()
    assert version, "the live run did not start"
    yield root, version, proc
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(30)


def test_promote_refuses_a_version_a_live_run_is_writing(live_run, capsys):
    root, version, proc = live_run
    code = main(["promote", "scratch", version])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"'{version}' is still being written by a live run (pid {proc.pid} on" in err
    assert not (root / "scratch" / "served.json").exists()
    code = main(["promote", "scratch", str(root / "scratch" / version)])  # by folder too
    assert code == 2 and "still being written by a live run" in capsys.readouterr().err
    proc.stdin.close()
    proc.wait(30)
    assert main(["promote", "scratch", version]) == 0  # the run is over: promotable
    assert json.loads((root / "scratch" / "served.json").read_text())["current"] == version


def png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    photo("apple", seed, size=40).save(buf, "PNG")
    return buf.getvalue()


def lying_zip(path: Path, change) -> Path:
    """A zip whose directory entry for ``apple/1.png`` is altered by ``change(info)`` before it is written."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("apple/0.png", png_bytes(1))
        z.writestr("apple/1.png", png_bytes(2))
        z.writestr("leaf/0.png", png_bytes(3))
        change(z.getinfo("apple/1.png"))
    return path


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def hostile_zips(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (the zip, a word its refusal must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    bomb = folder / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("apple/bomb.png", "w", force_zip64=True) as f:
        for _ in range(200):  # 200 MB of zeros, about 200 KB zipped
            f.write(bytes(1 << 20))
    many = folder / "many.zip"
    with zipfile.ZipFile(many, "w", zipfile.ZIP_STORED) as z:
        for i in range(40_000):  # the 40,000: refused from the directory, nothing read
            z.writestr(f"c{i % 3}/{i}.png", b"x")
    inner = zip_of(folder / "inner.zip", {"apple/0.png": png_bytes(1)}).read_bytes()
    not_zip = folder / "photo.zip"
    not_zip.write_bytes(png_bytes(5))
    good = zip_of(folder / "good.zip", {"apple/0.png": png_bytes(1), "leaf/0.png": png_bytes(2)}).read_bytes()
    truncated = folder / "truncated.zip"
    truncated.write_bytes(good[: len(good) // 2])

    def method(info):
        info.compress_type = 99

    return {
        "bomb": (bomb, "MB"),
        "many members": (many, "entries"),
        "header says smaller": (lying_zip(folder / "small.zip", lambda i: setattr(i, "file_size", 10)), "damaged"),
        "header says bigger": (lying_zip(folder / "big.zip", lambda i: setattr(i, "file_size", 5000)), "damaged"),
        "bad crc": (lying_zip(folder / "crc.zip", lambda i: setattr(i, "CRC", i.CRC ^ 1)), "damaged"),
        "encrypted": (lying_zip(folder / "enc.zip", lambda i: setattr(i, "flag_bits", i.flag_bits | 1)), "encrypted"),
        "unknown method": (lying_zip(folder / "method.zip", method), "damaged"),
        "nested": (zip_of(folder / "nested.zip", {"apple/0.png": png_bytes(1), "apple/more.zip": inner}), "another"),
        "zip-slip": (zip_of(folder / "slip.zip", {"apple/0.png": png_bytes(1), "../evil.png": b"x"}), "outside"),
        "absolute": (zip_of(folder / "abs.zip", {"apple/0.png": png_bytes(1), "/etc/evil.png": b"x"}), "outside"),
        "png named .zip": (not_zip, "not a zip"),
        "truncated": (truncated, "not a zip"),
        "too many classes": (zip_of(folder / "classes.zip", {f"c{i}/0.png": b"x" for i in range(25)}), "class"),
        "too many per class": (zip_of(folder / "crowded.zip", {f"a/{i}.png": b"x" for i in range(40)}), "per class"),
    }


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def test_hostile_zips_through_the_api_are_each_one_sentence_about_the_upload(tiny_clip, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from clipdemo.settings import Settings
    from clipdemo.testing import launched
    from clipdemo.ui.app import build_app, launch_kwargs

    zips = hostile_zips(tmp_path / "zips")
    settings = Settings(model=str(tiny_clip), checkpoint_dir=tmp_path / "ck")
    no_rows = ("", "", "", "", None, None, None, None)
    with launched(build_app(settings), **launch_kwargs(settings)) as url:
        client = Client(url, verbose=False)
        before = rss_mb()
        for name, (path, word) in zips.items():
            with pytest.raises(AppError) as refused:
                client.predict(handle_file(str(path)), *no_rows, api_name="/fewshot_teach")
            message = str(refused.value)
            assert "went wrong" not in message and "logged" not in message, (name, message)
            assert "zip" in message.lower() and word in message, (name, message)
            assert message.endswith(".") and "\n" not in message and str(tmp_path) not in message, (name, message)
        grown = rss_mb() - before
        good = zip_of(
            tmp_path / "ok.zip",
            {f"{c}/{i}.png": png_bytes(10 * k + i) for k, c in enumerate(("apple", "leaf")) for i in range(2)},
        )
        status, _ = client.predict(handle_file(str(good)), *no_rows, api_name="/fewshot_teach")
        assert status.startswith("**Taught 2 classes on 4 images**")
        for message in other_uploads_on_the_tab(client, tmp_path):
            assert "went wrong" not in message and message.endswith(".") and str(tmp_path) not in message, message
    assert grown < 150, f"RSS grew by {grown:.0f} MB over {len(zips)} hostile zips"


def other_uploads_on_the_tab(client, tmp_path: Path) -> list[str]:
    """The tab's other uploads, each bad: the refusals' messages (each must be a sentence about the file)."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    junk = tmp_path / "page.png"
    junk.write_text("<!doctype html><html><body>not a photo</body></html>")
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(77))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(png_bytes(78)[:300])
    calls = [
        ((None, "apple", "leaf", "", "", [handle_file(str(junk))], [handle_file(str(good))], None, None), "teach"),
        ((handle_file(str(truncated)), 1.0), "classify"),
        ((handle_file(str(junk)), 0.5), "classify"),
    ]
    messages = []
    for args, endpoint in calls:
        with pytest.raises(AppError) as refused:
            client.predict(*args, api_name=f"/fewshot_{endpoint}")
        messages.append(str(refused.value))
    return messages


def test_empty_splits_and_empty_lists_look_like_nothing():
    def png(seed):
        buf = io.BytesIO()
        photo("sky", seed, size=40).save(buf, "PNG")
        return buf.getvalue()

    empty = Looks.of_rows([], [])
    assert empty.colours.shape == (0, 192) and first_matches(empty, empty).tolist() == []
    train = Split([png(i) for i in range(6)], [0, 1] * 3)
    dataset = ImageDataset(["a", "b"], {"train": train, "test": Split([], []), "more": Split([], [])}, "s", "f")
    assert plan_splits(dataset).leak == ""
