"""Builders for tests and benchmarks: tiny models, coloured images and folders, a miniature Stanford Cars devkit,
scratch checkpoints, a corpus of good and bad image files, and the helpers that serve an app and screenshot it.

Everything here writes only where it is told (a ``tmp_path``); nothing needs the network. Sections:

- Tiny models: ``make_clip_folder(path)`` / ``make_siglip_folder(path)`` write a random HF CLIP / SigLIP that loads
  like a Hub model. Speed does not depend on weight values, so ``make_clip_folder(path, "vit-b-32")`` measures real
  ViT-B/32 latency (the benches use it); ``"tiny"`` is for fast tests.
- Coloured images: ``colour_image("sky", seed)`` is a noisy solid colour that a tiny random CLIP tells apart from
  the others; ``colour_folder(root, classes, per_class)`` writes a folder of them, flat or with train/test splits;
  ``layout_folder(root, {"train": {"cat": 3}, ...})`` writes any layout.
- ``write_minicars(root)``: the Stanford Cars devkit in its original layout (``.mat`` files, JPEGs).
- ``scratch_checkpoint(folder, classes)``: an untrained scratch CLIP checkpoint, written as training writes one.
- ``image_cases(tmp_dir)``: every kind of image file a user might upload, good and bad, with what must happen;
  ``encoded(image, format)`` and ``png_claiming(width, height)`` for bytes of your own.
- ``fake_trainer(...)``, ``job_gate``, ``recorded_calls``, ``tree_digest``, ``wait_for``, ``last_json``, ``run_cli``:
  for the job runner and the CLI.
- ``free_port``, ``launched``, ``app_served``, ``app_page``, ``screenshot``: a served app and a browser page on it.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import logging
import os
import socket
import struct
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clipdemo.data.cars_names import CLASS_NAMES

# --- tiny models --------------------------------------------------------------------------------------------------

SHAPES = {
    # text: width, layers, heads; vision: width, layers, heads, image, patch; projection
    "tiny": dict(text=(32, 2, 2), vision=(32, 2, 2, 32, 8), projection=16),
    "vit-b-32": dict(text=(512, 12, 8), vision=(768, 12, 12, 224, 32), projection=512),
}


def write_byte_tokenizer(folder: Path, context_length: int = 77):
    """A working CLIPTokenizer with a byte-level vocabulary and no merges."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=context_length)


def make_clip_folder(path, shape: str = "tiny", seed: int = 0, context: int = 77) -> Path:
    """Write a random CLIP model (its text context ``context`` tokens), tokenizer and image processor to ``path``
    with save_pretrained."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    s = SHAPES[shape]
    tokenizer = write_byte_tokenizer(folder)
    (tw, tl, th), (vw, vl, vh, size, patch) = s["text"], s["vision"]
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=tw,
            intermediate_size=4 * tw,
            num_hidden_layers=tl,
            num_attention_heads=th,
            max_position_embeddings=context,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=vw,
            intermediate_size=4 * vw,
            num_hidden_layers=vl,
            num_attention_heads=vh,
            image_size=size,
            patch_size=patch,
        ),
        projection_dim=s["projection"],
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


# SigLIP test models: a word-level tokenizer (the real one is SentencePiece, which needs a trained model file).
SIGLIP_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "photo",
    "picture",
    "cat",
    "cats",
    "dog",
    "dogs",
    "red",
    "blue",
    "green",
    "yellow",
    "car",
    "sports",
    "bird",
    "flower",
    "temple",
    "woman",
    "in",
    "uniform",
    "star",
    "circle",
    "square",
    "triangle",
    "plane",
    "tree",
    "house",
    "boat",
    "apple",
    "one",
    "two",
    "three",
    ".",
]
SIGLIP_SHAPES = {
    # text: width, layers, heads; vision: width, layers, heads, image, patch
    "tiny": dict(text=(32, 2, 2), vision=(32, 2, 2, 32, 8)),
    "vit-b-32": dict(text=(512, 12, 8), vision=(768, 12, 12, 224, 32)),  # ViT-B/32-shaped, like the CLIP bench model
}


def make_siglip_folder(path, shape: str = "tiny", seed: int = 0, context_length: int = 16) -> Path:
    """Write a random SigLIP model, tokenizer and image processor to ``path`` (AutoModel/AutoProcessor load it).

    The logit scale and bias start where SigLIP training starts (scale 10, bias -10), so a random model says
    "none of these" the way a real one does for unrelated labels: every sigmoid score is near 0.
    """
    import math

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(SIGLIP_WORDS))}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=context_length,
    )
    s = SIGLIP_SHAPES[shape]
    (tw, tl, th), (vw, vl, vh, size, patch) = s["text"], s["vision"]
    config = SiglipConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=tw,
            intermediate_size=4 * tw,
            num_hidden_layers=tl,
            num_attention_heads=th,
            max_position_embeddings=context_length,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
            projection_size=vw,  # the text head projects into the image tower's width
        ),
        vision_config=dict(
            hidden_size=vw,
            intermediate_size=4 * vw,
            num_hidden_layers=vl,
            num_attention_heads=vh,
            image_size=size,
            patch_size=patch,
        ),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    model.save_pretrained(folder)
    image_processor = SiglipImageProcessor(size={"height": size, "width": size})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


# --- coloured images and image folders ----------------------------------------------------------------------------

# Distinct, saturated colours: a tiny random CLIP embeds them apart. Names not listed get a colour from their hash.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 60, 220),
    "yellow": (230, 210, 30),
    "apple": (220, 40, 40),
    "leaf": (40, 200, 60),
    "sky": (40, 60, 220),
    "sun": (235, 215, 40),
}


def colour_of(name: str) -> tuple[int, int, int]:
    """The class's colour: from ``COLOURS``, else a saturated hue picked by the name's CRC (stable across runs)."""
    if name in COLOURS:
        return COLOURS[name]
    r, g, b = colorsys.hsv_to_rgb((zlib.crc32(name.encode()) % 360) / 360, 0.85, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def colour_image(name: str, seed: int = 0, size: int = 48, noise: float = 25.0) -> Image.Image:
    """A ``size`` x ``size`` image of the class's colour plus Gaussian pixel noise; each seed gives other pixels."""
    rng = np.random.default_rng(seed)
    pixels = np.array(colour_of(name))[None, None] + rng.normal(0, noise, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def colour_folder(
    root,
    classes: Sequence[str] = ("red", "green", "blue"),
    per_class: int | Mapping[str, int] = 4,
    *,
    seed: int = 0,
    size: int = 48,
    noise: float = 25.0,
) -> Path:
    """A folder of ``colour_image``s, ``<class>_<i>.png``, and return ``root``.

    ``per_class`` an int: flat, ``root/<class>/``. A mapping such as ``{"train": 6, "test": 3}``: one folder per
    split, ``root/<split>/<class>/``, as ``clipdemo.data.folder.image_folder`` reads them.
    """
    counts = {"": per_class} if isinstance(per_class, int) else dict(per_class)
    return layout_folder(root, {split: dict.fromkeys(classes, n) for split, n in counts.items()}, seed, size, noise)


def layout_folder(
    root, layout: Mapping[str, Mapping[str, int]], seed: int = 0, size: int = 48, noise: float = 25.0
) -> Path:
    """Any layout: ``{"train": {"dog": 3, "cat": 2}, "val": {"cat": 1}}``; the split ``""`` means flat. Image ``i``
    of the ``k``-th class of the ``s``-th split has seed ``seed + 1000 * s + 100 * k + i``, so no two images in one
    folder are byte-identical (a leak check would flag them) and the same call always writes the same files."""
    root = Path(root)
    for s, (split, classes) in enumerate(layout.items()):
        for k, (name, n) in enumerate(classes.items()):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                colour_image(name, seed + 1000 * s + 100 * k + i, size, noise).save(folder / f"{name}_{i}.png")
    return root


# --- a miniature Stanford Cars devkit -----------------------------------------------------------------------------
#
#     root = write_minicars(tmp_path / "cars", classes=4, per_class_train=6, per_class_test=3)
#
# The .mat files are written with ``scipy.io.savemat`` as struct arrays with the real field names and shapes
# (``annotations`` is 1 x N with bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname; ``class`` is 1-based;
# ``class_names`` is a 1 x K cell). Images are small JPEGs of a class-specific colour plus per-image noise, so
# classes are separable and no two images are byte-identical.

FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def class_names(classes: int) -> list[str]:
    """The real cars_meta.mat's names, so names look (and tokenize) like real ones."""
    return [CLASS_NAMES[i] if i < len(CLASS_NAMES) else f"Make Model {i + 1} Sedan 2012" for i in range(classes)]


def class_colour(label: int, classes: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(label / max(classes, 1), 0.9, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def write_minicars(
    root,
    classes: int = 4,
    per_class_train: int = 6,
    per_class_test: int = 3,
    seed: int = 0,
    size: int = 32,
    test_labels_in: str | None = "root",
) -> Path:
    """Write the devkit under ``root`` and return it. ``test_labels_in``: "root", "devkit" or None (no test labels)."""
    from scipy.io import savemat

    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    names = np.empty((1, classes), dtype=object)
    for i, name in enumerate(class_names(classes)):
        names[0, i] = name
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": names})

    train = _write_images(root / "cars_train", classes, per_class_train, rng, size)
    savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": mat_annotations(train)})
    if per_class_test:
        test = _write_images(root / "cars_test", classes, per_class_test, rng, size)
        # the real devkit ships an unlabelled test file; the labels came later as a separate download
        savemat(root / "devkit" / "cars_test_annos.mat", {"annotations": mat_annotations(test, with_class=False)})
        if test_labels_in:
            where = root if test_labels_in == "root" else root / "devkit"
            savemat(where / "cars_test_annos_withlabels.mat", {"annotations": mat_annotations(test)})
    return root


def mat_annotations(records: list[tuple[int, str, tuple]], with_class: bool = True) -> np.ndarray:
    """A 1 x N MATLAB struct array from (1-based class, fname, bbox) records, as in the real files."""
    fields = [f for f in FIELDS if with_class or f != "class"]
    arr = np.zeros((1, len(records)), dtype=[(f, object) for f in fields])
    for i, (cls, fname, (x1, y1, x2, y2)) in enumerate(records):
        values = {"bbox_x1": x1, "bbox_y1": y1, "bbox_x2": x2, "bbox_y2": y2}
        row = [np.array([[values[f]]], dtype=np.uint16) for f in fields[:4]]
        if with_class:
            row.append(np.array([[cls]], dtype=np.uint8))
        row.append(np.array([fname]))
        arr[0, i] = tuple(row)
    return arr


def _write_images(folder: Path, classes: int, per_class: int, rng, size: int) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    labels = rng.permutation(np.repeat(np.arange(classes), per_class))  # classes interleaved, as in the real files
    records = []
    for i, label in enumerate(labels):
        fname = f"{i + 1:05d}.jpg"
        base = np.array(class_colour(int(label), classes), dtype=np.int16)
        noise = rng.integers(-20, 21, size=(size, size, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / fname, quality=90)
        x1, y1 = (int(v) for v in rng.integers(0, size // 4, 2))
        records.append((int(label) + 1, fname, (x1, y1, size - 1, size - 1)))
    return records


# --- scratch checkpoints ------------------------------------------------------------------------------------------


def scratch_checkpoint(folder, classes: Sequence[str], seed: int = 0) -> Path:
    """A random (untrained) scratch CLIP checkpoint of the default preset, written as training writes one."""
    import torch

    from clipdemo.checkpoints import save_checkpoint
    from clipdemo.scratch.config import preset
    from clipdemo.scratch.model import ScratchCLIP

    config = preset("default")
    torch.manual_seed(seed)
    model = ScratchCLIP(config).eval()
    return save_checkpoint(
        folder,
        model.state_dict(),
        {"kind": "scratch-clip", **config.to_dict()},
        {"dataset": {"source": "a test"}, "classes": list(classes), "complete": True},
    )


# --- the job runner and the CLI -----------------------------------------------------------------------------------


@dataclass
class FakeTrainer:
    """A trainer honouring the contract of ``train_scratch`` / ``train_head`` (progress events, ``should_stop``
    polled between steps, an atomic ``save_checkpoint`` into ``out_dir``) in a fraction of a second. A module-level
    class, so the job runner's child process gets it like the real trainers; see ``fake_trainer``."""

    steps: int = 5
    delay: float = 0.01
    fail: BaseException | None = None
    gate: object = None
    calls: Path | None = None
    save_first: bool = False
    disk_full: bool = False
    deaf: bool = False
    exit_code: int | None = None

    def __call__(self, dataset, out_dir, options, progress, should_stop, cache_dir=None):
        import torch

        from clipdemo.progress import typed

        progress = typed(progress)
        if self.calls is not None:
            where = {"pid": os.getpid(), "nice": os.nice(0), "threads": torch.get_num_threads()}
            with open(self.calls, "a") as f:  # JSON lines: the library's no-pickle rule holds here too
                record = [dataset.source, str(out_dir), asdict(options), options.checked_for, where]
                f.write(json.dumps(record, default=str) + "\n")
        if self.save_first:
            self._save(dataset, out_dir)
        step = 0
        for step in range(1, self.steps + 1):
            if should_stop() and not self.deaf:
                break
            if self.gate is not None:
                self.gate.wait(10)
            progress(
                {
                    "phase": "train",
                    "epoch": 1,
                    "epochs": 1,
                    "step": step,
                    "total_steps": self.steps,
                    "loss": 1.0 / step,
                    "eta": (self.steps - step) * self.delay,
                }
            )
            time.sleep(self.delay)
        progress({"phase": "eval", "epoch": 1, "epochs": 1, "step": step, "val_acc": 0.5})
        if self.exit_code is not None:
            os._exit(self.exit_code)
        if self.fail is not None:
            raise self.fail
        self._save(dataset, out_dir)
        logging.getLogger(__name__).info("fake trainer saved after %d steps", step)  # reaches the server's log
        return self._result(dataset, out_dir, "cancelled" if should_stop() else "finished")

    def _save(self, dataset, out_dir):
        import torch

        from clipdemo import checkpoints

        if self.disk_full:  # the weights file half written, then the disk is full
            real = checkpoints.save_file

            def half_then_full(tensors, path, metadata=None):
                real(tensors, path, metadata=metadata)
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                raise OSError(28, "No space left on device")

            checkpoints.save_file = half_then_full
        checkpoints.save_checkpoint(
            out_dir,
            {"w": torch.zeros(3)},
            {"kind": "fake"},
            {"classes": list(dataset.class_names), "metrics": {"acc1": 0.5}},
        )

    @staticmethod
    def _result(dataset, out_dir, stopped):
        from clipdemo.evaluate import Scores
        from clipdemo.results import TrainResult

        scores = Scores(0.5, 1.0, 0.5, 0.5, 6, [[2, 0, 0], [0, 1, 1], [0, 1, 1]])
        return TrainResult(
            "scratch", out_dir, list(dataset.class_names), scores, {"protocol": "official"}, {}, {"stopped": stopped}
        )


def fake_trainer(steps=5, delay=0.01, fail: BaseException | None = None, gate=None, calls=None, **more) -> FakeTrainer:
    """A ``FakeTrainer``. ``fail``: raise it after the last step; ``gate``: an Event of the spawn context
    (``job_gate()``) waited for before each step; ``calls``: a file each call is recorded in (``recorded_calls``);
    ``save_first``: save the checkpoint before the first step; ``disk_full``: the save fails half-way with ENOSPC;
    ``deaf``: ignore ``should_stop`` (a trainer stuck in a long step); ``exit_code``: the process ends at once with it,
    saying nothing (as if killed for memory)."""
    return FakeTrainer(steps, delay, fail, gate, Path(calls) if calls else None, **more)


def job_gate():
    """An Event that crosses into a job's child process (``multiprocessing``'s spawn context)."""
    import multiprocessing

    return multiprocessing.get_context("spawn").Event()


def recorded_calls(calls) -> list[tuple]:
    """What a ``fake_trainer(calls=file)`` was called with, in order: (dataset source, out_dir, options, where), where
    being the process it ran in: its pid, niceness and torch threads."""
    from clipdemo.pipeline import TrainOptions

    if not Path(calls).exists():
        return []
    out = []
    for source, folder, fields, family, where in map(json.loads, Path(calls).read_text().splitlines()):
        options = TrainOptions(**fields)
        if family:  # what the child was handed: options checked for this family
            options = options.checked(family)
        out.append((source, Path(folder), options, where))
    return out


def fake_head_trainer(dataset, out_dir, options, progress, should_stop, cache_dir=None):
    """A Cars-head trainer double that reports as ``heads.fit_head`` and ``cars.train_head`` do: "train" ticks with no
    loss and no epoch, an "eval" per scored candidate by step, a search that ends at step 8 of the 14 planned, then
    "done"; it saves a checkpoint whose card holds its metrics (top-1 60%)."""
    import torch

    from clipdemo.checkpoints import save_checkpoint
    from clipdemo.evaluate import Scores
    from clipdemo.progress import typed
    from clipdemo.results import TrainResult

    report = typed(progress)
    for step in range(1, 9):
        if should_stop():
            break
        report({"phase": "train", "step": step, "total_steps": 14, "eta": 0.01 * (14 - step)})
        if step % 2 == 0:
            report(
                {"phase": "eval", "val_acc": 0.1 * step, "best_val_acc": 0.1 * step, "step": step, "total_steps": 14}
            )
        time.sleep(0.01)
    report({"phase": "done", "val_acc": 0.8, "best_val_acc": 0.8, "test_acc": 0.6})
    metrics = {"acc1": 0.6, "acc5": 1.0}
    save_checkpoint(
        out_dir, {"w": torch.zeros(3)}, {"kind": "fake"}, {"classes": dataset.class_names, "metrics": metrics}
    )
    scores = Scores(0.6, 1.0, 0.6, 0.6, 5, [[2, 0, 0], [0, 1, 1], [0, 0, 1]])
    stopped = "cancelled" if should_stop() else "finished"
    return TrainResult("cars-head", out_dir, list(dataset.class_names), scores, {}, {}, {"stopped": stopped}, scores)


def tree_digest(root) -> dict[str, str]:
    """Every file under ``root`` and the SHA-256 of its bytes: equal digests mean nothing was written."""
    root = Path(root)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def wait_for(predicate, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` every 10 ms until it is true (True) or ``timeout`` seconds have passed (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def last_json(capsys):
    """The JSON on the last line a CLI command printed (pytest's ``capsys``)."""
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def run_cli(capsys, *args) -> tuple[int, dict | None, str]:
    """``python -m clipdemo ARGS`` in process: (exit code, the last line's JSON when it succeeded, stderr)."""
    from clipdemo.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, (json.loads(lines[-1]) if code == 0 and lines else None), captured.err


# --- a served app and a browser page on it ------------------------------------------------------------------------

SCREENSHOTS: Path | None = None  # where ``screenshot`` writes; tests/conftest.py sets it (a tmp folder)
SETTLED = """() => !document.querySelector('.pending, .generating')
    && !document.getAnimations().some(a => a instanceof CSSTransition && a.playState === 'running')"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def launched(blocks, **kwargs):
    """Serve a Blocks on a free local port for the duration of the block; yields its URL."""
    blocks.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        yield blocks.local_url
    finally:
        blocks.close()


@contextmanager
def app_served(settings):
    """The whole app on these settings, served for the duration of the block; yields its URL."""
    from clipdemo.ui.app import build_app, launch_kwargs

    with launched(build_app(settings), **launch_kwargs(settings)) as url:
        yield url


@contextmanager
def app_page(browser, url: str, height: int = 1000, width: int = 1280):
    """A browser page on the app, once its zero-shot upload is attached (Gradio renders before it serves); a
    ``width`` of 390 (and ``height`` 844) is a phone."""
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        page.goto(url)
        page.wait_for_selector("#zs-images input[type=file]", state="attached", timeout=60_000)
        yield page
    finally:
        page.close()


def wait_for_chart(page, selector: str, timeout: int = 60_000) -> None:
    """Wait until the native plot in ``selector`` is drawn by Vega: before that, the block shows an empty plot's
    icon, an svg too (a chart read or captured then is blank)."""
    page.wait_for_selector(f"{selector} .vega-embed svg, {selector} .vega-embed canvas", timeout=timeout)


def settle(page) -> None:
    """Wait until no output is pending and Gradio's fade of its loading overlay has ended (text read or captured
    mid-fade is dimmed), and it stays so for a moment: between two steps of an event chain the page is briefly
    settled before the next step's overlay appears. A polling timer may never settle: then after 10 s, as it is."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(SETTLED, timeout=10_000)
        page.wait_for_timeout(150)  # the browser submits a chain's next step as soon as the last one ends
        page.wait_for_function(SETTLED, timeout=10_000)
    except PlaywrightTimeout:
        pass


def screenshot(page, name: str) -> Path:
    """Full-page ``<name>.png`` in ``SCREENSHOTS`` (if unset, a new temporary folder), once the page has settled."""
    global SCREENSHOTS
    if SCREENSHOTS is None:
        SCREENSHOTS = Path(tempfile.mkdtemp(prefix="clipdemo-screenshots-"))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    settle(page)
    page.screenshot(path=str(path), full_page=True)
    return path


# --- a corpus of good and bad image files -------------------------------------------------------------------------
#
# ``image_cases(tmp_dir)`` writes every file under ``tmp_dir`` in a few hundred milliseconds and returns one ``Case``
# per file: tests/test_images.py sends each through ``clipdemo.images.load_image``, tests/test_api_bad_inputs.py
# sends the same files through the app's HTTP API.
#
# A case with ``ok=True`` must load; ``size`` and ``pixel`` (the top-left RGB, within ``tolerance``) say what the
# result must be, and ``expect`` says the same in words. A case with ``ok=False`` must be refused with an
# ``ImageError`` whose message contains ``expect``. Cases with ``upload=False`` are not files one can upload (a
# missing path, a folder). Every refusal holds at the default caps: no per-call override is needed.

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)

# Substrings of clipdemo.images' messages, one per kind of refusal.
NOT_IMAGE, DAMAGED, TRUNCATED, EMPTY = "not an image", "damaged", "truncated", "empty"
TOO_MANY_PIXELS, TOO_BIG, NOT_FOUND, FOLDER = "too many pixels", "too big", "not found", "folder"


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    ok: bool
    expect: str  # ok=False: a substring of the error message; ok=True: what is checked, in words
    size: tuple[int, int] | None = None  # ok=True: the (width, height) of the loaded image
    pixel: tuple[int, int, int] | None = None  # ok=True: its top-left RGB ...
    tolerance: int = 0  # ... within this much per band (lossy formats)
    upload: bool = True  # False: not a file one could upload (missing path, folder)


def image_cases(tmp_dir: Path) -> list[Case]:
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def save(name: str, image: Image.Image, **params) -> Path:
        path = tmp_dir / name
        image.save(path, **params)
        return path

    def write(name: str, data: bytes) -> Path:
        path = tmp_dir / name
        path.write_bytes(data)
        return path

    def good(name, path, size, pixel, expect, tolerance=0):
        cases.append(Case(name, path, True, expect, size, pixel, tolerance))

    def bad(name, path, expect, upload=True):
        cases.append(Case(name, path, False, expect, upload=upload))

    for section in (
        _cases_ordinary,
        _cases_sizes,
        _cases_animations,
        _cases_transparency,
        _cases_bit_depths,
        _cases_exif,
        _cases_not_images,
        _cases_damaged,
        _cases_too_big,
        _cases_not_files,
    ):
        section(tmp_dir, save, write, good, bad)
    return cases


def _cases_ordinary(tmp_dir: Path, save, write, good, bad) -> None:
    """Ordinary files in every allowed format."""
    good("png_rgb", save("rgb.png", _solid("RGB", (32, 24), RED)), (32, 24), RED, "red 32x24")
    good("jpeg_rgb", save("rgb.jpg", _solid("RGB", (32, 24), BLUE), quality=95), (32, 24), BLUE, "blue", 12)
    good(
        "jpeg_progressive",
        save("progressive.jpg", _solid("RGB", (40, 30), GREEN), progressive=True),
        (40, 30),
        GREEN,
        "green",
        12,
    )
    good("jpeg_grey", save("grey.jpg", _solid("L", (16, 16), 100)), (16, 16), (100, 100, 100), "grey 100", 4)
    good("bmp", save("image.bmp", _solid("RGB", (10, 7), GREEN)), (10, 7), GREEN, "green")
    good("gif", save("image.gif", _solid("RGB", (9, 9), BLUE)), (9, 9), BLUE, "blue")
    good("tiff", save("image.tiff", _solid("RGB", (12, 5), RED), compression="tiff_lzw"), (12, 5), RED, "red")
    good("webp_lossless", save("lossless.webp", _solid("RGB", (20, 10), BLUE), lossless=True), (20, 10), BLUE, "blue")
    good("webp_lossy", save("lossy.webp", _solid("RGB", (20, 10), RED), quality=90), (20, 10), RED, "red", 16)
    good(
        "mpo_two_pictures",
        save(
            "phone.jpg",
            _solid("RGB", (16, 8), RED),
            format="MPO",
            save_all=True,
            append_images=[_solid("RGB", (16, 8), BLUE)],
        ),
        (16, 8),
        RED,
        "first: red",
        12,
    )
    good(
        "jpeg_named_png",
        save("really_a_jpeg.png", _solid("RGB", (8, 8), GREEN), format="JPEG"),
        (8, 8),
        GREEN,
        "format judged by content",
        12,
    )
    good("unicode_name", save("ünïcødé näme 写真.png", _solid("RGB", (3, 3), BLUE)), (3, 3), BLUE, "blue")


def _cases_sizes(tmp_dir: Path, save, write, good, bad) -> None:
    """Sizes: tiny and extreme aspect ratios, under the caps."""
    good("one_pixel", save("1x1.png", _solid("RGB", (1, 1), RED)), (1, 1), RED, "1x1 red")
    good("wide_10000x1", save("wide.png", _solid("RGB", (10000, 1), GREEN)), (10000, 1), GREEN, "10000x1")
    good("tall_1x8000", save("tall.png", _solid("RGB", (1, 8000), BLUE)), (1, 8000), BLUE, "1x8000")


def _cases_animations(tmp_dir: Path, save, write, good, bad) -> None:
    """Animations and multi-page files: the first frame."""
    frames = [_solid("RGB", (16, 16), colour) for colour in (RED, GREEN, BLUE)]
    good(
        "gif_animated",
        save("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=50, loop=0),
        (16, 16),
        RED,
        "first frame red",
    )
    good(
        "webp_animated",
        save("animated.webp", frames[1], save_all=True, append_images=[frames[0]], duration=50, lossless=True),
        (16, 16),
        GREEN,
        "first frame green",
    )
    good(
        "png_animated_apng",
        save("animated.png", frames[2], save_all=True, append_images=frames[:2], duration=50),
        (16, 16),
        BLUE,
        "first frame blue",
    )
    good(
        "tiff_multipage",
        save("pages.tiff", frames[1], save_all=True, append_images=[frames[0]]),
        (16, 16),
        GREEN,
        "first page green",
    )


def _cases_transparency(tmp_dir: Path, save, write, good, bad) -> None:
    """Transparency that convert("RGB") gets wrong: composited onto white."""
    good(
        "png_rgba_transparent",
        save("transparent.png", _solid("RGBA", (8, 8), (0, 0, 0, 0))),
        (8, 8),
        WHITE,
        "fully transparent -> white",
    )
    good(
        "png_rgba_half",
        save("half.png", _solid("RGBA", (8, 8), (255, 0, 0, 128))),
        (8, 8),
        (255, 127, 127),
        "50% red over white",
        1,
    )
    good("png_la_transparent", save("la.png", _solid("LA", (8, 8), (0, 0))), (8, 8), WHITE, "LA transparent")
    good(
        "png_palette_transparent",
        save("palette.png", _palette_with_hole(), transparency=0),
        (8, 8),
        WHITE,
        "transparent index -> white; others red",
    )
    good(
        "png_palette_alpha_table",
        save("palette_alpha.png", _palette_with_hole(), transparency=bytes([128, 255])),
        (8, 8),
        (127, 127, 127),
        "black at alpha 128 over white",
        1,
    )
    good(
        "png_rgb_colour_key",
        save("colour_key.png", _rgb_with_key(), transparency=BLACK),
        (8, 8),
        WHITE,
        "tRNS colour key -> white",
    )
    good(
        "gif_transparent",
        save("transparent.gif", _palette_with_hole(), transparency=0),
        (8, 8),
        WHITE,
        "GIF transparent index -> white",
    )
    good(
        "webp_transparent",
        save("transparent.webp", _solid("RGBA", (8, 8), (0, 255, 0, 0)), lossless=True),
        (8, 8),
        WHITE,
        "WebP alpha -> white",
    )


def _cases_bit_depths(tmp_dir: Path, save, write, good, bad) -> None:
    """Bit depths and colour spaces convert("RGB") gets wrong: 1-bit, 16- and 32-bit scaled, CMYK."""
    good("png_1bit", save("one_bit.png", _one_bit()), (8, 8), BLACK, "1-bit: black top-left, white elsewhere")
    good(
        "png_16bit",
        save("sixteen.png", _high_bit("I;16", 25700, 65535)),
        (8, 8),
        (100, 100, 100),
        "I;16 25700 -> 100 (not clipped to 255); 65535 -> 255",
    )
    good(
        "tiff_16bit_big_endian",
        save("sixteen_be.tiff", _high_bit("I;16B", 25700, 65535)),
        (8, 8),
        (100, 100, 100),
        "I;16B 25700 -> 100",
    )
    good(
        "tiff_int32",
        save("int32.tiff", _high_bit("I", 51400, 65535)),
        (8, 8),
        (200, 200, 200),
        "I holding 16-bit data: 51400 -> 200",
    )
    good(
        "tiff_int32_signed",
        save("int32_signed.tiff", _high_bit("I", -1000, 1000)),
        (8, 8),
        BLACK,
        "I with negatives: stretched, min -> 0",
    )
    good(
        "tiff_float_unit", save("float.tiff", _high_bit("F", 0.25, 1.0)), (8, 8), (64, 64, 64), "F in 0..1: 0.25 -> 64"
    )
    good(
        "tiff_float_wide",
        save("float_wide.tiff", _high_bit("F", 500.0, 1000.0, 0.0)),
        (8, 8),
        (128, 128, 128),
        "F in 0..1000: stretched, 500 -> 128",
    )
    good(
        "jpeg_cmyk", save("cmyk.jpg", _solid("CMYK", (8, 8), (0, 255, 255, 0)), quality=95), (8, 8), RED, "CMYK red", 12
    )
    good("tiff_cmyk", save("cmyk.tiff", _solid("CMYK", (8, 8), (255, 0, 255, 0))), (8, 8), GREEN, "CMYK green")


def _cases_exif(tmp_dir: Path, save, write, good, bad) -> None:
    """EXIF orientation: stored 40x20 (top half red, bottom half blue)."""
    good(
        "jpeg_exif_rotate_6",
        save("rotated6.jpg", _halves(), exif=_orientation(6), quality=95),
        (20, 40),
        BLUE,
        "orientation 6 (90° clockwise): 20x40, top-left was bottom-left",
        12,
    )
    good(
        "png_exif_rotate_8",
        save("rotated8.png", _halves(), exif=_orientation(8)),
        (20, 40),
        RED,
        "orientation 8 (90° anticlockwise): 20x40, top-left was top-right",
    )
    good(
        "jpeg_exif_rotate_3",
        save("rotated3.jpg", _halves(), exif=_orientation(3), quality=95),
        (40, 20),
        BLUE,
        "orientation 3 (180°): same size, upside down",
        12,
    )


def _cases_not_images(tmp_dir: Path, save, write, good, bad) -> None:
    """Not images, or images in formats we do not decode."""
    bad("zero_bytes", write("empty.png", b""), EMPTY)
    bad("text_renamed_png", write("notes.png", b"just some text, not a picture\n" * 4), NOT_IMAGE)
    bad("html", write("page.html", b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"), NOT_IMAGE)
    bad(
        "svg",
        write(
            "drawing.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            b'<rect width="10" height="10" fill="red"/></svg>',
        ),
        NOT_IMAGE,
    )
    bad(
        "svg_renamed_png",
        write("drawing.png", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>'),
        NOT_IMAGE,
    )
    bad("random_bytes", write("noise.jpg", bytes((i * 7919 + 13) % 251 for i in range(4096))), NOT_IMAGE)
    bad("zip_archive", write("archive.png", _zip_bytes()), NOT_IMAGE)
    bad("ico", save("icon.ico", _solid("RGB", (16, 16), RED)), NOT_IMAGE)
    bad("eps", save("image.eps", _solid("RGB", (8, 8), RED)), NOT_IMAGE)
    bad(
        "psd_header",
        write("image.psd", b"8BPS\x00\x01" + b"\x00" * 6 + struct.pack(">HIIHH", 3, 8, 8, 8, 3) + b"\x00" * 64),
        NOT_IMAGE,
    )
    bad("ppm", save("image.ppm", _solid("RGB", (8, 8), RED)), NOT_IMAGE)
    bad("tga", save("image.tga", _solid("RGB", (8, 8), RED)), NOT_IMAGE)
    bad("pcx", save("image.pcx", _solid("RGB", (8, 8), RED)), NOT_IMAGE)
    bad("pdf", save("document.pdf", _solid("RGB", (8, 8), RED)), NOT_IMAGE)


def _cases_damaged(tmp_dir: Path, save, write, good, bad) -> None:
    """Damaged or incomplete files in allowed formats."""
    photo = _noise((64, 48))
    jpeg, png = encoded(photo, "JPEG", quality=90), encoded(photo, "PNG")
    bad("jpeg_truncated", write("truncated.jpg", jpeg[: len(jpeg) // 2]), TRUNCATED)
    bad("png_truncated", write("truncated.png", png[: len(png) // 2]), TRUNCATED)
    bad("gif_truncated", write("truncated.gif", _cut(encoded(photo, "GIF"))), TRUNCATED)
    bad("tiff_truncated", write("truncated.tiff", _cut(encoded(photo, "TIFF"))), TRUNCATED)
    bad("bmp_truncated", write("truncated.bmp", _cut(encoded(photo, "BMP"))), TRUNCATED)
    bad("webp_truncated", write("truncated.webp", _cut(encoded(photo, "WEBP"))), DAMAGED)
    bad("png_signature_only", write("signature.png", png[:8]), NOT_IMAGE)
    bad("png_signature_then_garbage", write("garbage.png", png[:8] + b"\xde\xad\xbe\xef" * 64), NOT_IMAGE)
    bad("png_corrupt_zlib_stream", write("corrupt_zlib.png", _corrupt_idat(png)), DAMAGED)
    bad("jpeg_soi_only", write("soi.jpg", b"\xff\xd8\xff"), NOT_IMAGE)


def _cases_too_big(tmp_dir: Path, save, write, good, bad) -> None:
    """Too big: decompression bombs (refused from the header, before decoding) and huge files."""
    # Three bands: under Pillow's own guard (89 Mpx), in its warning band, and over its error limit (179 Mpx).
    bad("bomb_gif_7000x7000", write("bomb.gif", gif_claiming(7000, 7000)), TOO_MANY_PIXELS)
    bad("bomb_png_10000x10000", write("bomb_100mpx.png", png_claiming(10000, 10000)), TOO_MANY_PIXELS)
    bad("bomb_png_20000x20000", write("bomb.png", png_claiming(20000, 20000)), TOO_MANY_PIXELS)
    bad("bomb_png_65535x65535", write("bomb_max.png", png_claiming(65535, 65535)), TOO_MANY_PIXELS)
    bad("just_over_pixel_cap_8000x5001", write("over_cap.png", png_claiming(8000, 5001)), TOO_MANY_PIXELS)
    png = encoded(_noise((64, 48)), "PNG")  # a real PNG header, then a sparse 20 MiB
    bad("file_over_20_mib", _sparse_file(tmp_dir / "huge.png", png, 20 * 1024 * 1024 + 1), TOO_BIG)


def _cases_not_files(tmp_dir: Path, save, write, good, bad) -> None:
    """Not files at all."""
    bad("missing_path", tmp_dir / "no_such_image.png", NOT_FOUND, upload=False)
    folder = tmp_dir / "folder.png"
    folder.mkdir(exist_ok=True)
    bad("folder", folder, FOLDER, upload=False)


def _solid(mode: str, size: tuple[int, int], colour) -> Image.Image:
    return Image.new(mode, size, colour)


def _noise(size: tuple[int, int]) -> Image.Image:
    """Incompressible pixels, so that cutting the file in half really cuts the pixel data."""
    data = bytes((i * 2654435761 >> 7) & 0xFF for i in range(size[0] * size[1] * 3))
    return Image.frombytes("RGB", size, data)


def encoded(image: Image.Image, format: str, **params) -> bytes:
    """The bytes of ``image`` saved in ``format`` (Pillow's name: "PNG", "JPEG"...)."""
    buffer = io.BytesIO()
    image.save(buffer, format, **params)
    return buffer.getvalue()


def _cut(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def _palette_with_hole() -> Image.Image:
    """8x8 palette image: index 0 (black) at the top-left, index 1 (red) everywhere else."""
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.putpixel((0, 0), 0)
    return image


def _rgb_with_key() -> Image.Image:
    image = Image.new("RGB", (8, 8), RED)
    image.putpixel((0, 0), BLACK)
    return image


def _one_bit() -> Image.Image:
    image = Image.new("1", (8, 8), 1)
    image.putpixel((0, 0), 0)
    return image


def _high_bit(mode: str, top_left, elsewhere, bottom_right=None) -> Image.Image:
    image = Image.new(mode, (8, 8), elsewhere)
    image.putpixel((0, 0), top_left)
    if bottom_right is not None:
        image.putpixel((7, 7), bottom_right)
    return image


def _halves() -> Image.Image:
    """40x20 as stored: top half red, bottom half blue."""
    image = Image.new("RGB", (40, 20), RED)
    image.paste(BLUE, (0, 10, 40, 20))
    return image


def _orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value  # Orientation
    return exif


def png_claiming(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header claims width x height: a bomb as far as any size check can tell."""
    data = encoded(Image.new("1", (1, 1)), "PNG")
    chunk = data[12:16] + struct.pack(">II", width, height) + data[24:29]  # b"IHDR" + 13 bytes of fields
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def gif_claiming(width: int, height: int) -> bytes:
    """A tiny GIF whose logical screen (bytes 6-9, little-endian) is width x height."""
    data = encoded(Image.new("P", (1, 1)), "GIF")
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def _corrupt_idat(png: bytes) -> bytes:
    """Break the zlib header at the start of the pixel data. (Pillow skips IDAT CRCs when decoding, so a
    bad checksum alone would still load.)"""
    at = png.index(b"IDAT") + 4
    return png[:at] + bytes([png[at] ^ 0xFF]) + png[at + 1 :]


def _zip_bytes() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


def _sparse_file(path: Path, head: bytes, size: int) -> Path:
    """A real PNG followed by zeros up to ``size`` bytes; truncate() keeps it sparse, so it costs no disk."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def head_checkpoints(root, backbone, data_dir) -> Path:
    """``root`` as a checkpoint folder serving the shipped scratch CLIP and a tiny Cars head on ``backbone``,
    trained on a miniature devkit written under ``data_dir``; returns the head's version folder."""
    import shutil

    from clipdemo.cars import train_head
    from clipdemo.checkpoints import claim_version, promote
    from clipdemo.data.sources import load_source
    from clipdemo.settings import REPO_ROOT

    root = Path(root)
    shutil.copytree(REPO_ROOT / "checkpoints" / "scratch", root / "scratch", ignore=shutil.ignore_patterns(".cache"))
    cars = load_source(str(write_minicars(Path(data_dir) / "cars", classes=3, per_class_train=3, size=64)))
    with claim_version(root, "cars-head", "api") as claim:
        train_head(
            cars, str(backbone), claim.folder, split="official", cache_dir=root / ".cache", progress=lambda i: None
        )
    promote(root, "cars-head", claim.folder.name)
    return claim.folder
