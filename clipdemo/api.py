"""The Python API: ranked labels in one line from a notebook or a script, on the CLI's own path.

    >>> from clipdemo import ZeroShot
    >>> zs = ZeroShot("openai/clip-vit-base-patch32")        # any CLIP / SigLIP id or folder, or a scratch checkpoint
    >>> zs(["photo.jpg", "https://example.com/cat.png"], ["a cat", "a dog"])
    [{'image': 'photo.jpg', 'scoring': 'softmax', 'independent': False,
      'predictions': [{'label': 'a cat', 'score': 0.93}, {'label': 'a dog', 'score': 0.07}]}, ...]

The result is what ``python -m clipdemo zero-shot`` prints (one entry per image, labels ranked by the model
family's own score), because the CLI calls this same class: the encoder from ``encoders.load_encoder`` (ONNX
Runtime or PyTorch, loaded once per process), the label and image embedding caches and templates of
``clipdemo.zeroshot``, the family rules of ``clipdemo.scoring``. ``TrainedHead`` does the same for a head
checkpoint (the Stanford Cars head), and a scratch checkpoint folder is a model like any other for ``ZeroShot``
(its own class names and templates are the default labels).

Images may be paths, ``PIL.Image``s, encoded bytes or http(s) URLs; each is opened by ``clipdemo.images`` (format
allow-list, size caps, EXIF orientation). Nothing here imports gradio.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image

from clipdemo.errors import UserError
from clipdemo.images import ImageError, load_image
from clipdemo.settings import Settings, default_model, image_caps

URL_PREFIXES = ("http://", "https://")
URL_TIMEOUT = 30  # seconds to fetch one image


def fetch_image(url: str) -> Image.Image:
    """An image from an http(s) URL, read up to ``CLIPDEMO_MAX_BYTES`` and opened like any other."""
    import httpx

    _, max_bytes = image_caps()
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=URL_TIMEOUT) as response:
            response.raise_for_status()
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    break  # load_image says it is too big
    except httpx.HTTPError as e:
        raise ImageError(f"The image at {url[:80]} could not be downloaded ({type(e).__name__}).") from None
    return load_image(bytes(data))


def open_images(images) -> tuple[list[str], list[Image.Image]]:
    """(names, decoded RGB images) for one image or a list: paths, PIL images, bytes or http(s) URLs. A path or
    URL is named by itself, a PIL image by its file name or its place in the list ("image 2")."""
    if isinstance(images, (str, os.PathLike, Image.Image, bytes, bytearray)):
        images = [images]
    names, loaded = [], []
    for i, item in enumerate(images):
        if isinstance(item, str) and item.startswith(URL_PREFIXES):
            loaded.append(fetch_image(item))
        else:
            loaded.append(load_image(item))
        if isinstance(item, (str, os.PathLike)):
            names.append(str(item))
        else:
            names.append(getattr(item, "filename", "") or f"image {i + 1}")
    if not loaded:
        raise UserError("Add at least one image.")
    return names, loaded


def threshold_for(scoring: str, open_set: bool = False, threshold: float | None = None) -> float | None:
    """ "None of these" below this: the given threshold, else the family's default when ``open_set``, else none."""
    from clipdemo.zeroshot import DEFAULT_THRESHOLD

    if threshold is not None:
        return threshold
    return DEFAULT_THRESHOLD[scoring] if open_set else None


def entries(result, top_k: int | None = None) -> list[dict]:
    """Per image of a ``zeroshot.ZeroShotResult``: the JSON the CLI prints (without the image's name)."""
    out = []
    for predictions, none in zip(result.ranked(top_k), result.none_of_these()):
        entry = {
            "scoring": result.scoring,
            "independent": result.independent,
            "predictions": [{"label": p.label, "score": round(p.score, 6)} for p in predictions],
        }
        if result.threshold is not None:
            entry.update(none_of_these=none, threshold=result.threshold)
        out.append(entry)
    return out


class ZeroShot:
    """Zero-shot classification with one model, loaded once: ``ZeroShot(model)(images, labels)``.

    Args:
        model: a Hub id (``openai/clip-vit-base-patch32``, ``google/siglip-base-patch16-224``), a local HF CLIP or
            SigLIP folder, or a clipdemo scratch checkpoint folder; default ``CLIPDEMO_MODEL``.
        templates: the default prompt templates: ``photo``, ``label``, ``imagenet-80``, ``cars-8``, or a custom
            template holding ``{}`` where the label goes, or a sequence of templates.
        device: ``auto``, ``cpu`` or ``cuda``; ``precision``/``engine``: as ``CLIPDEMO_PRECISION``/``CLIPDEMO_ENGINE``.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        templates="photo",
        device: str = "auto",
        precision: str | None = None,
        engine: str | None = None,
    ):
        from clipdemo.encoders import load_encoder

        self.model = str(model or default_model())
        self.templates = templates
        self.encoder = load_encoder(self.model, device=device, precision=precision, engine=engine)

    @classmethod
    def scratch(cls, **kwargs) -> ZeroShot:
        """The scratch CLIP the app serves (``CLIPDEMO_CHECKPOINT_DIR``'s promoted ``scratch`` version)."""
        from clipdemo.checkpoints import served_checkpoint

        folder = served_checkpoint(Settings.from_env().checkpoint_dir, "scratch")
        if folder is None:
            raise UserError("No scratch CLIP is served; train and promote one (python -m clipdemo train scratch).")
        return cls(folder, **kwargs)

    def __repr__(self) -> str:
        return f"ZeroShot({self.encoder.describe()})"

    def labels_and_templates(self, labels=None, templates=None) -> tuple[list[str], tuple[str, ...]]:
        """Labels (a comma-separated string or a list) and templates, checked; a scratch checkpoint's own class
        names and templates when no labels are given."""
        from clipdemo.zeroshot import clean_labels, parse_labels, resolve_templates

        if labels is None:
            names = getattr(self.encoder, "class_names", None)
            if not names:
                raise UserError("Give the labels to rank, e.g. ['a cat', 'a dog'].")
            labels = list(names)
            if templates is None:
                templates = tuple(self.encoder.templates)
        label_list = parse_labels(labels) if isinstance(labels, str) else clean_labels(labels)
        templates = self.templates if templates is None else templates
        if isinstance(templates, str):
            return label_list, resolve_templates(templates)
        return label_list, tuple(one for given in templates for one in resolve_templates(given))

    def result(
        self,
        images: list[Image.Image],
        labels=None,
        templates=None,
        *,
        multi_label: bool = False,
        open_set: bool = False,
        threshold: float | None = None,
    ):
        """The full ``zeroshot.ZeroShotResult`` for decoded images (scores, similarities, truncated labels)."""
        from clipdemo.zeroshot import zero_shot

        label_list, template_tuple = self.labels_and_templates(labels, templates)
        return zero_shot(
            self.encoder,
            images,
            label_list,
            template_tuple,
            multi_label=multi_label,
            threshold=threshold_for(self.encoder.scoring, open_set, threshold),
        )

    def __call__(
        self,
        images,
        labels=None,
        templates=None,
        *,
        top_k: int | None = None,
        multi_label: bool = False,
        open_set: bool = False,
        threshold: float | None = None,
    ) -> list[dict]:
        """Rank ``labels`` for each image.

        Args:
            images: one image or a list: paths, PIL images, encoded bytes or http(s) URLs.
            labels: a list of labels, or one comma-separated string; None for a scratch checkpoint's own classes.
            templates: this call's templates (default: the constructor's).
            top_k: keep the best k labels per image (default: all).
            multi_label: score each label on its own (SigLIP: its sigmoid; CLIP: the cosine similarity).
            open_set: say "none of these" below the family's default threshold (or ``threshold``, 0 to 1).

        Returns:
            per image, ``{"image", "scoring", "independent", "predictions": [{"label", "score"}, ...]}`` (plus
            ``none_of_these`` and ``threshold`` in open-set mode), labels best first: the CLI's JSON.
        """
        names, loaded = open_images(images)
        result = self.result(loaded, labels, templates, multi_label=multi_label, open_set=open_set, threshold=threshold)
        for notice in result.notices():
            warnings.warn(notice, stacklevel=2)
        return [dict(image=name, **entry) for name, entry in zip(names, entries(result, top_k))]


class TrainedHead:
    """A head trained over a frozen CLIP (the Stanford Cars head): ``TrainedHead(folder)(images)``.

    Args:
        checkpoint: a head checkpoint folder; default: the Cars head the app serves (``CLIPDEMO_CHECKPOINT_DIR``).
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    def __init__(self, checkpoint: str | os.PathLike | None = None, *, device: str = "auto"):
        from clipdemo.checkpoints import served_checkpoint
        from clipdemo.families import CARS_HEAD
        from clipdemo.heads import HeadClassifier

        if checkpoint is None:
            checkpoint = served_checkpoint(Settings.from_env().checkpoint_dir, CARS_HEAD)
            if checkpoint is None:
                raise UserError("No Cars head is served; train and promote one (python -m clipdemo train head).")
        self.path = Path(checkpoint)
        self.classifier = HeadClassifier(self.path, device=device)
        self.class_names = self.classifier.class_names

    def __repr__(self) -> str:
        return f"TrainedHead({self.path.name}: {len(self.class_names)} classes)"

    def __call__(self, images, top_k: int | None = 5) -> list[dict]:
        """Per image: ``{"image", "predictions": the head's top-k, "zero_shot": zero-shot's top-k}``, each a list
        of ``{"label", "score"}`` best first (the head's probabilities; zero-shot by the backbone family's rule)."""
        from clipdemo.zeroshot import rank

        names, loaded = open_images(images)
        head, zeroshot = self.classifier.scores(self.classifier.backbone.encode_images(loaded))
        ranked = [rank(scores, self.class_names, top_k) for scores in (head, zeroshot)]
        return [
            {
                "image": name,
                "predictions": [{"label": p.label, "score": round(p.score, 6)} for p in by_head],
                "zero_shot": [{"label": p.label, "score": round(p.score, 6)} for p in by_zs],
            }
            for name, by_head, by_zs in zip(names, *ranked)
        ]
