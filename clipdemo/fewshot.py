"""Your own classes from a few photos: a head in seconds on a frozen CLIP, beside zero-shot, with a slider between.

    from clipdemo.fewshot import teach, leave_one_out, save_head

    taught = teach(encoder, {"mug": [p1, p2, p3], "kettle": [p4, p5, p6]})   # paths, bytes or PIL images
    ranked = taught.predict(image, weight=0.5)    # (blend, zero-shot, head) top-k; 0 = zero-shot, 1 = the head
    loo = leave_one_out(taught)                   # with 3+ images per class: head vs zero-shot accuracy
    save_head(taught, "my-head")                  # a head checkpoint: ``python -m clipdemo eval`` loads it

Each image is encoded once (kept in a process-wide LRU keyed by pixel digest, so re-teaching with one more class
costs only the new images); the head is ``heads.DEFAULT_HEAD`` fitted by ``heads.fit_head`` on those features,
which starts at zero-shot on the class names and picks its weight by k-fold cross-validation on the few images.
The slider blends the log-probabilities of zero-shot and of the head (``scoring.blend``: WiSE-FT for a linear head);
the zero-shot column is scored by the backbone family's rule (``clipdemo.scoring``), as on the Zero-shot tab.
Nothing here touches the server's checkpoint folder: ``save_head`` writes where it is told (the UI: a temporary folder).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from clipdemo import heads, scoring
from clipdemo.errors import UserError
from clipdemo.features import Backbone
from clipdemo.heads import DEFAULT_HEAD, FitResult, fit_head, predict_logits
from clipdemo.images import ImageError, load_image
from clipdemo.scoring import Rule, ZeroShotClassifier
from clipdemo.settings import image_caps
from clipdemo.zeroshot import (
    CONTROL_CHARS,
    MAX_LABEL_CHARS,
    EmbeddingCache,
    Prediction,
    build_classifier,
    encode_images_cached,
    rank,
)

MIN_CLASSES, MAX_CLASSES = 2, 20
MAX_PER_CLASS = 16
MIN_LOO = 3  # images per class for a leave-one-out score
MAX_LOO = 24  # images left out in turn (a head fit each, ~0.3 s on 2 cores); more: an even sample across classes
MAX_ZIP_BYTES = 60 * 1024 * 1024  # uncompressed image bytes read from one zip, as its directory declares them
MAX_ZIP_MEMBERS = 4 * MAX_CLASSES * MAX_PER_CLASS  # directory entries of any kind (folders, hidden files too)
TEMPLATES = ("a photo of a {}.",)
FEWSHOT_CACHE = EmbeddingCache(4096)  # ~8 MB at D=512: every visitor's images, encoded once


class FewShotError(UserError):
    """Classes or example images a visitor gave can't be used; the message says why in one sentence."""


def clean_name(text) -> str:
    """A class name as typed, with control characters dropped and whitespace collapsed (the zero-shot label rules)."""
    return " ".join(CONTROL_CHARS.sub("", str(text or "")).split())[:MAX_LABEL_CHARS]


def examples_from_zip(path) -> dict[str, list[bytes]]:
    """``class/image`` members of a zip as ``{class: [encoded bytes]}`` (also ``top/class/image``, as zipping a
    folder of class folders gives; hidden files and ``__MACOSX`` ignored). Nothing is extracted to disk; decoding
    (and refusing junk images) is left to ``teach``.

    Everything the zip can get wrong is the upload's fault and said so in one ``FewShotError`` sentence naming the
    member: names that climb out of the folder (``../x``, absolute), encrypted members, zips inside the zip, too
    many files or classes, too many bytes (a zip bomb), a member that fails its CRC or holds more or less than its
    header says. Counts and declared sizes are checked from the zip's directory before any member is read, and
    each read stops at the declared size (``_read_member``)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise FewShotError("That file is not a zip archive: zip one folder per class, images inside.") from None
    with archive:
        members = _zip_members(archive.infolist())
        examples: dict[str, list[bytes]] = {}
        for parts, info in members:
            examples.setdefault(parts[0], []).append(_read_member(archive, info))
    if not examples:
        raise FewShotError("The zip has no class folders with files in them (expected class/image.jpg).")
    return examples


def _zip_members(infos: list[zipfile.ZipInfo]) -> list[tuple[list[str], zipfile.ZipInfo]]:
    """The ``(class/…/file parts, info)`` of the images to read, checked from the directory alone."""
    if len(infos) > MAX_ZIP_MEMBERS:
        raise FewShotError(
            f"The zip holds {len(infos)} entries; at most {MAX_ZIP_MEMBERS} (up to {MAX_CLASSES} classes of "
            f"{MAX_PER_CLASS} photos)."
        )
    members = []
    for info in infos:
        name = info.filename.replace("\\", "/")
        shown = CONTROL_CHARS.sub("", name)[:80]
        parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
        if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise FewShotError(
                f"The zip holds '{shown}', a name that points outside the zip's folder; zip the class folders "
                "themselves."
            )
        if info.is_dir() or any(p.startswith((".", "__MACOSX")) for p in parts):
            continue
        if info.flag_bits & 0x1:
            raise FewShotError(f"The zip's file '{shown}' is encrypted; zip the photos without a password.")
        if name.lower().endswith((".zip", ".jar", ".7z", ".rar", ".tar", ".gz")):
            raise FewShotError(f"The zip holds another archive ('{shown}'); put the photos in class folders directly.")
        members.append((parts, info))
    if members and len({p[0] for p, _ in members}) == 1 and any(len(p) >= 3 for p, _ in members):
        members = [(p[1:], info) for p, info in members]  # one top folder holding the class folders
    members = [(p, info) for p, info in members if len(p) >= 2]  # a file outside any class folder is ignored
    per_class: dict[str, int] = {}
    for parts, _ in members:
        per_class[parts[0]] = per_class.get(parts[0], 0) + 1
    if len(per_class) > MAX_CLASSES:
        raise FewShotError(f"The zip has {len(per_class)} class folders; at most {MAX_CLASSES}.")
    crowded = next((c for c, n in per_class.items() if n > MAX_PER_CLASS), None)
    if crowded is not None:
        shown = CONTROL_CHARS.sub("", crowded)[:60]
        raise FewShotError(
            f"Class folder '{shown}' in the zip has {per_class[crowded]} files; at most {MAX_PER_CLASS} per class."
        )
    if sum(info.file_size for _, info in members) > MAX_ZIP_BYTES:
        raise FewShotError(
            f"The zip holds more than {MAX_ZIP_BYTES // 2**20} MB of files; send fewer or smaller images."
        )
    return members


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One member's bytes, read in chunks and never past its declared size (nor the image byte cap: a bigger one
    is refused by ``teach`` as too big, from its first bytes). A member that fails its CRC, ends early or holds
    more than declared is one sentence."""
    shown = CONTROL_CHARS.sub("", info.filename)[:80]
    cap = min(info.file_size, image_caps()[1] + 1)
    chunks, total = [], 0
    try:
        with archive.open(info) as member:
            while total < cap:
                chunk = member.read(min(1 << 20, cap - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total == info.file_size and member.read(1):  # more data than the header declares
                raise zipfile.BadZipFile("longer than declared")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as e:
        raise FewShotError(
            f"The zip's file '{shown}' is damaged ({_zip_damage(e)}); zip the photos again and re-upload."
        ) from None
    if total < cap:
        raise FewShotError(f"The zip's file '{shown}' is damaged (shorter than its header says); zip the photos again.")
    return b"".join(chunks)


def _zip_damage(error: Exception) -> str:
    text = str(error).lower()
    if "crc" in text:
        return "it fails its checksum"
    if "encrypt" in text or "password" in text:
        return "it is encrypted"
    if "compression" in text or isinstance(error, NotImplementedError):
        return "an unsupported compression method"
    return "its data does not match its header"


@dataclass
class Taught:
    """A few-shot head over a frozen CLIP, with what it was taught on (the per-session state of the tab)."""

    class_names: list[str]
    features: torch.Tensor  # [N, D] the readable examples' embeddings
    labels: torch.Tensor  # [N]
    zeroshot: ZeroShotClassifier  # the class names as a zero-shot classifier
    fit: FitResult
    backbone: Backbone
    skipped: list[str] = field(default_factory=list)  # "class/file: reason" of each unreadable example
    seed: int = 0

    def slim(self) -> Taught:
        """What a session keeps once taught: the head and the labels, not the examples' embeddings (``N x D``);
        ``leave_one_out`` needs those, so it runs before."""
        return replace(self, features=self.features[:0])

    @property
    def counts(self) -> list[int]:
        return np.bincount(self.labels.numpy(), minlength=len(self.class_names)).tolist()

    def probabilities(self, features: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(blend, zero-shot, head) scores ``[N, C]``: the blend is ``scoring.blend`` renormalised (0 is zero-shot
        CLIP, 1 the few-shot head); zero-shot is the family's rule, as on the Zero-shot tab."""
        weight = min(1.0, max(0.0, float(weight)))
        head = predict_logits(self.fit.head, features.float())
        blend = scoring.blend(self.zeroshot.logits(features), head, weight).softmax(-1)
        return blend, self.zeroshot.probabilities(features), head.softmax(-1)

    def predict(self, image, weight: float = 1.0, k: int = 5) -> tuple[list[Prediction], ...]:
        """Top-``k`` of the blend, of zero-shot and of the head for one image (path, bytes or PIL)."""
        features = encode_images_cached(self.backbone.encoder, [load_image(image)], FEWSHOT_CACHE)
        return tuple(rank(p, self.class_names, k)[0] for p in self.probabilities(features, weight))


def teach(
    backbone,
    examples: dict[str, Sequence],
    *,
    templates: Sequence[str] = TEMPLATES,
    seed: int = 0,
    head: str = DEFAULT_HEAD,
) -> Taught:
    """Fit ``head`` on a few images per class: ``examples`` maps each class name to 1..``MAX_PER_CLASS`` images
    (paths, bytes or PIL images). Unreadable images are skipped and named; a class left with none, too few or too
    many classes or images are refused with a ``FewShotError``."""
    examples = {clean_name(n): v for n, v in examples.items() if clean_name(n)}
    names = list(examples)
    if len(names) < MIN_CLASSES:
        raise FewShotError(f"Teach at least {MIN_CLASSES} classes: with {len(names)} there is nothing to tell apart.")
    if len(names) > MAX_CLASSES:
        raise FewShotError(f"Too many classes: {len(names)} given, at most {MAX_CLASSES}.")
    for name in names:
        n = len(examples[name])
        if n == 0:
            raise FewShotError(f"Class '{name[:60]}' has no images: give it 1 to {MAX_PER_CLASS}.")
        if n > MAX_PER_CLASS:
            raise FewShotError(f"Class '{name[:60]}' has {n} images; at most {MAX_PER_CLASS} per class.")
    names = sorted(names)  # the order an image folder of the same classes has (eval compares them)
    images, labels, skipped = [], [], []
    for c, name in enumerate(names):
        for i, ref in enumerate(examples[name]):
            try:
                images.append(load_image(ref))
                labels.append(c)
            except ImageError as e:
                where = Path(ref).name if isinstance(ref, (str, Path)) else f"image {i + 1}"
                skipped.append(f"{name}/{where}: {e}")
        if c not in labels:
            raise FewShotError(
                f"None of class '{name[:60]}''s {len(examples[name])} file(s) could be read as an image."
            )
    backbone = Backbone.of(backbone)
    features = encode_images_cached(backbone.encoder, images, FEWSHOT_CACHE).float()
    y = torch.tensor(labels, dtype=torch.long)
    templates = tuple(templates)
    classes = build_classifier(backbone.encoder, names, templates).float()
    zeroshot = ZeroShotClassifier(classes, Rule.of(backbone), tuple(names), templates)
    fit = fit_head(head, (features, y), None, zeroshot=zeroshot, seed=seed)
    return Taught(names, features, y, zeroshot, fit, backbone, skipped, seed)


@dataclass(frozen=True)
class LeaveOneOut:
    head_acc: float
    zeroshot_acc: float
    n: int
    correct: int  # by the head
    zeroshot_correct: int


def leave_one_out(taught: Taught) -> LeaveOneOut:
    """Each example classified by a head fitted on all the others (same head, same selection), and by zero-shot;
    needs ``MIN_LOO`` images in every class. Each fit chooses its own hyperparameters without the left-out image
    (nested: no peeking), by cross-validation as the full fit does. With more than ``MAX_LOO`` examples, an even
    sample of them across the classes is left out in turn (``n`` says how many)."""
    if min(taught.counts) < MIN_LOO:
        raise FewShotError(
            f"Leave-one-out needs at least {MIN_LOO} readable images in every class "
            f"(the fewest here: {min(taught.counts)})."
        )
    x, y = taught.features, taught.labels
    zs = taught.zeroshot.logits(x).argmax(1)
    held = _even_sample(y, MAX_LOO, taught.seed)
    correct = 0
    for i in held:
        keep = torch.arange(len(y)) != i
        fit = fit_head(taught.fit.name, (x[keep], y[keep]), None, zeroshot=taught.zeroshot, seed=taught.seed)
        correct += int(predict_logits(fit.head, x[i : i + 1]).argmax(1).item() == y[i].item())
    zs_correct = int((zs[held] == y[held]).sum())
    return LeaveOneOut(correct / len(held), zs_correct / len(held), len(held), correct, zs_correct)


def _even_sample(y: torch.Tensor, k: int, seed: int) -> list[int]:
    """All indices when there are at most ``k``; else ``k`` taken round-robin over the classes (shuffled in each)."""
    if len(y) <= k:
        return list(range(len(y)))
    rng = np.random.default_rng(seed)
    per_class = [list(rng.permutation(np.flatnonzero(y.numpy() == c))) for c in range(int(y.max()) + 1)]
    order = [int(i) for row in zip(*[p + [None] * (len(y) - len(p)) for p in per_class]) for i in row if i is not None]
    return sorted(order[:k])


def save_head(taught: Taught, out_dir, *, source: str = "your classes (uploaded in the app)") -> Path:
    """Write ``taught`` as a head checkpoint (``heads.save_head``: the Cars tab, Admin and ``python -m clipdemo
    eval`` load it with ``heads.HeadClassifier``)."""
    n, counts = len(taught.labels), taught.counts
    card = {
        "dataset": {"source": source, "splits": {"train": n}},
        "split": f"few-shot: all {n} images trained on ({min(counts)}-{max(counts)} per class); "
        "no held-out split (see validation: k-fold on the same images)",
        "split_protocol": "few-shot",
        "metrics": {},
        "skipped": {"train": len(taught.skipped)},
        "notes": [f"unreadable: {s}" for s in taught.skipped[:20]],
    }
    trained_on = f"{source}: {len(taught.class_names)} classes, {n} images"
    return heads.save_head(
        out_dir,
        taught.fit,
        taught.zeroshot,
        taught.backbone,
        title="Few-shot head (your classes)",
        seed=taught.seed,
        trained_on=trained_on,
        card=card,
    )


def zip_folder(folder, zip_path) -> Path:
    """``folder`` as a zip holding ``<folder name>/<file>`` (unzip it and pass the folder to ``--checkpoint``)."""
    folder, zip_path = Path(folder), Path(zip_path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"{folder.name}/{f.name}")
    zip_path.write_bytes(buffer.getvalue())
    return zip_path
