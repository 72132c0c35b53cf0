"""Your classes tab: name a few classes, drop a few photos of each (or a zip of class folders), get a head in
seconds, classify new photos beside zero-shot with a slider between the two, and download the head.

Per session and in memory only (``gr.State``, dropped with the session; ``SESSION_CAPACITY`` sessions at most):
nothing is written to the server's checkpoints. The download is a zip in a bounded temporary folder.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr

from clipdemo.fewshot import (
    MAX_CLASSES,
    MAX_PER_CLASS,
    MIN_LOO,
    FewShotError,
    LeaveOneOut,
    Taught,
    clean_name,
    examples_from_zip,
    leave_one_out,
    save_head,
    teach,
    zip_folder,
)
from clipdemo.images import ImageError
from clipdemo.names import model_name
from clipdemo.serving import Served
from clipdemo.ui.common import BLEND_WORDS, MODEL_QUEUE, STATE_TTL, gallery_paths, image_upload, user_errors

SLOTS = 4  # class rows on the page; a zip brings up to MAX_CLASSES
INTRO = (
    f"**Teach CLIP your own classes from a few photos**: 2 to {SLOTS} classes in the rows below (up to {MAX_CLASSES} "
    "from a zip), then classify new photos with what you taught and download it."
)
DOWNLOADS = Path(tempfile.gettempdir()) / "clipdemo-fewshot-downloads"
MAX_DOWNLOADS = 64  # zips kept for Gradio to serve; older ones are deleted


def gather(zip_file, names: list[str], files: list) -> dict[str, list]:
    """``{class: [images]}`` from the class rows (a name and its images) and the zip; one sentence for a mistake."""
    examples: dict[str, list] = {}
    for i, (name, images) in enumerate(zip(names, files)):
        images = gallery_paths(images)
        label = clean_name(name)
        if not label:
            if images:
                raise FewShotError(f"Class row {i + 1} has {len(images)} image(s) but no name: name it.")
            continue
        if label in examples:
            raise FewShotError(f"Class '{label[:60]}' is named twice: merge its images into one row.")
        if not images:
            raise FewShotError(f"Class '{label[:60]}' has no images: add 1 to {MAX_PER_CLASS}.")
        examples[label] = images
    if zip_file is not None:
        for label, images in examples_from_zip(zip_file).items():
            examples.setdefault(label, []).extend(images)
    if not examples:
        raise FewShotError("Name at least 2 classes and add images to each (or upload a zip of class folders).")
    return examples


def loo_text(loo: LeaveOneOut | None, counts: list[int]) -> str:
    if loo is None:
        return (
            f"_Leave-one-out accuracy needs at least {MIN_LOO} images in every class (the fewest here: {min(counts)})._"
        )
    gain = 100 * (loo.head_acc - loo.zeroshot_acc)
    return (
        f"| leave-one-out on {loo.n} images | accuracy |\n|---|---|\n"
        f"| few-shot head | **{100 * loo.head_acc:.1f}%** ({loo.correct}/{loo.n}) |\n"
        f"| zero-shot CLIP | {100 * loo.zeroshot_acc:.1f}% ({loo.zeroshot_correct}/{loo.n}) |\n\n"
        f"The head is {abs(gain):.1f} points {'above' if gain >= 0 else 'below'} zero-shot: each image was "
        "classified by a head trained without it."
    )


def teach_handler(served: Served, zip_file, *rows):
    """(state, status, leave-one-out table) from the zip and the ``SLOTS`` name boxes then ``SLOTS`` image lists."""
    t0 = time.perf_counter()
    examples = gather(zip_file, list(rows[:SLOTS]), list(rows[SLOTS:]))
    choice = served.zero_shot()
    taught = teach(choice.encoder, examples)
    fit = taught.fit
    loo = leave_one_out(taught) if min(taught.counts) >= MIN_LOO else None
    skipped = (
        (
            f"\n\n⚠️ Skipped {len(taught.skipped)} unreadable file(s): "
            + "; ".join(taught.skipped[:5])
            + ("; …" if len(taught.skipped) > 5 else "")
        )
        if taught.skipped
        else ""
    )
    status = (
        f"**Taught {len(taught.class_names)} classes on {len(taught.labels)} images** "
        f"({', '.join(f'{n}: {c}' for n, c in zip(taught.class_names, taught.counts))}) in "
        f"{time.perf_counter() - t0:.1f} s with {model_name(taught.backbone.spec)}.{skipped}\n\n"
        "<details><summary>Details: what was trained</summary>\n\n"
        f"A small head `{fit.name}` on CLIP's picture features, starting from zero-shot on your class names; its "
        f"settings chosen by {fit.protocol}: {_hp(fit.hyperparameters)}.\n\n{BLEND_WORDS}\n\n</details>"
    )
    return taught.slim(), status, loo_text(loo, taught.counts)


def _hp(hp: dict) -> str:
    words = []
    if "alpha" in hp:
        words.append(f"blend weight α = {hp['alpha']:g}")
    if "C" in hp:
        words.append(f"C={hp['C']:g}")
    return ", ".join(words) or ", ".join(f"{k}={v}" for k, v in hp.items())


def classify_handler(taught: Taught | None, image, weight: float):
    """(blend top-5, zero-shot top-5, verdict) for one image at slider ``weight`` (0 zero-shot, 1 the head)."""
    if taught is None:
        raise FewShotError("Teach your classes first (step 1), then classify a new photo.")
    if image is None:
        raise ImageError("Upload a photo to classify.")
    blend, zeroshot, head = taught.predict(image, weight, k=5)
    labels = lambda ps: {p.label: p.score for p in ps}
    verdict = (
        f"**Blend at {weight:.2f}**: **{blend[0].label}** ({100 * blend[0].score:.1f}%) · zero-shot says "
        f"**{zeroshot[0].label}** ({100 * zeroshot[0].score:.1f}%) · the head says **{head[0].label}** "
        f"({100 * head[0].score:.1f}%)"
    )
    return labels(blend), labels(zeroshot), verdict


def slide(taught: Taught | None, image, weight: float):
    """The slider re-blends the current photo; with nothing taught or no photo yet it changes nothing."""
    if taught is None or image is None:
        return gr.skip(), gr.skip(), gr.skip()
    return classify_handler(taught, image, weight)


def download_handler(taught: Taught | None) -> str:
    """A zip of the head's checkpoint folder (``cars-head`` format), written outside the server's checkpoints."""
    if taught is None:
        raise FewShotError("Teach your classes first: there is no head to download yet.")
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    for old in sorted(DOWNLOADS.glob("*.zip"), key=lambda p: p.stat().st_mtime)[: -MAX_DOWNLOADS or None]:
        old.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=DOWNLOADS) as tmp:
        folder = save_head(taught, Path(tmp) / "fewshot-head")
        return str(zip_folder(folder, DOWNLOADS / f"fewshot-head-{uuid.uuid4().hex[:8]}.zip"))


def fewshot_download(taught: Taught | None = None) -> str:
    """Your classes, step 3: the taught head as a checkpoint zip (written right after each teach)."""
    return download_handler(taught)


def build(served: Served) -> None:
    """Step 1 teach, step 2 classify with the slider, step 3 download; the taught head lives in the session."""
    state = gr.State(None, time_to_live=STATE_TTL)
    names, files, zip_file, teach_btn, status, loo = _teach_rows()
    image, weight, classify_btn, verdict, blended, zeroshot = _classify_rows()
    download_btn = _download_row()
    taught = _wire_teach(served, teach_btn, [zip_file, *names, *files], [state, status, loo])
    # the zip is written as soon as a head is taught: the button then downloads it in one click
    taught.success(
        user_errors(fewshot_download), [state], [download_btn], api_name="fewshot_download", show_progress="hidden"
    ).success(lambda: gr.DownloadButton(interactive=True), None, download_btn, api_visibility="private")
    classify = user_errors(classify_handler)
    classify_btn.click(
        classify, [state, image, weight], [blended, zeroshot, verdict], api_name="fewshot_classify", **MODEL_QUEUE
    )
    weight.change(
        user_errors(slide),
        [state, image, weight],
        [blended, zeroshot, verdict],
        api_visibility="private",
        trigger_mode="always_last",
        **MODEL_QUEUE,
    )


def photo_count(files, row: int):
    """The photo box's label with how many photos it holds (the box shows two at a time)."""
    n = len(gallery_paths(files))
    return gr.File(label=f"Photos of class {row + 1}" + (f": {n} photo{'s' * (n != 1)}" if n else ""))


def _teach_rows():
    gr.Markdown(INTRO, elem_id="fs-intro")
    gr.Markdown(
        f"**1. Teach** 2 to {SLOTS} classes with 1 to {MAX_PER_CLASS} photos each (3+ each for a leave-one-out "
        f"score), or up to {MAX_CLASSES} from a zip. Your photos stay in this browser session: nothing is saved on "
        "the server."
    )
    names, files = [], []
    with gr.Row():
        for i in range(SLOTS):
            with gr.Column(min_width=200):
                names.append(gr.Textbox(label=f"Class {i + 1}", placeholder="e.g. my mug", elem_id=f"fs-name-{i}"))
                files.append(
                    gr.File(
                        label=f"Photos of class {i + 1}",
                        file_count="multiple",
                        file_types=["image"],
                        type="filepath",
                        height=140,  # two files at a time: the label counts them
                        elem_id=f"fs-files-{i}",
                    )
                )
                files[-1].change(
                    lambda f, i=i: photo_count(f, i),
                    files[-1],
                    files[-1],
                    show_progress="hidden",
                    queue=False,
                    api_visibility="private",
                )
    with gr.Row():
        zip_file = gr.File(
            label=f"…or a zip of class folders (up to {MAX_CLASSES})",
            file_types=[".zip"],
            type="filepath",
            height=120,
            elem_id="fs-zip",
        )
        teach_btn = gr.Button("Teach", variant="primary", elem_id="fs-teach")
    status = gr.Markdown("", elem_id="fs-status")
    loo = gr.Markdown("", elem_id="fs-loo")
    return names, files, zip_file, teach_btn, status, loo


def _classify_rows():
    gr.Markdown("**2. Classify** a new photo; the slider moves from zero-shot CLIP (0) to your head (1).")
    with gr.Row():
        with gr.Column(scale=2):
            image = image_upload(label="A new photo", sources=["upload", "clipboard"], height=240, elem_id="fs-image")
            weight = gr.Slider(0, 1, value=1.0, step=0.05, label="zero-shot ← blend → your head", elem_id="fs-weight")
            classify_btn = gr.Button("Classify", variant="primary", elem_id="fs-classify")
        with gr.Column(scale=3):
            verdict = gr.Markdown("", elem_id="fs-verdict")
            with gr.Row():
                blended = gr.Label(num_top_classes=5, label="Blend (at the slider)", elem_id="fs-blend")
                zeroshot = gr.Label(num_top_classes=5, label="Zero-shot CLIP", elem_id="fs-zeroshot")
    return image, weight, classify_btn, verdict, blended, zeroshot


def _download_row():
    gr.Markdown("**3. Download** what you taught, to use it outside this page.")
    download_btn = gr.DownloadButton(
        "Download the head (a zip)", interactive=False, elem_id="fs-download-btn", variant="secondary"
    )
    gr.Markdown(
        "<details><summary>Details: what is in the zip</summary>\n\n"
        "A checkpoint folder `fewshot-head/` (the head's weights, its class names and a card). Unzip it, then e.g. "
        "`python -m clipdemo eval --checkpoint fewshot-head --data YOUR_FOLDER`.\n\n</details>",
        elem_id="fs-download-help",
    )
    return download_btn


def _wire_teach(served: Served, teach_btn, inputs, outputs):
    assert SLOTS == 4, "fewshot_teach below names one argument per slot"

    def fewshot_teach(
        zip_file=None,
        class_1=None,
        class_2=None,
        class_3=None,
        class_4=None,
        photos_1=None,
        photos_2=None,
        photos_3=None,
        photos_4=None,
    ):
        """Your classes, step 1: teach a head from a zip of class folders, or from class names and their photos.
        Args:
            zip_file: a zip of class/photo.jpg folders (2 to 20 classes), instead of the rows below.
            class_1: the first class's name (and so on up to class_4).
            photos_1: 1 to 16 photos of class_1 (and so on up to photos_4).
        """
        names = [n or "" for n in (class_1, class_2, class_3, class_4)]
        return teach_handler(served, zip_file, *names, photos_1, photos_2, photos_3, photos_4)

    return teach_btn.click(
        user_errors(fewshot_teach),
        inputs,
        outputs,
        api_name="fewshot_teach",
        **MODEL_QUEUE,
    )
