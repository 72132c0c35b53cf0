"""Search a set of images by text or by example, find near-duplicates, and draw the set as a 2-D map.

    from clipdemo.search import index_folder, query_embedding, search, near_duplicates, map_2d

    index = index_folder(backbone, "photos/", cache_dir=".cache")   # or build_index(backbone, paths)
    hits = search(index, query_embedding(backbone, "a red car"), top_k=10)   # or an image path / PIL image
    pairs = near_duplicates(index, threshold=0.95)
    xy, query_xy = map_2d(index, query)                                     # PCA (or t-SNE) of the embeddings

Every image is encoded once: ``build_index`` goes through ``features.encode_split`` (on-disk cache with
``cache_dir``, keyed by the backbone and the files' names, sizes and times), unreadable files are skipped,
counted and named, never fatal. Scores are cosine similarities of L2-normalised CLIP embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from clipdemo.data import Split, fingerprint
from clipdemo.errors import UserError
from clipdemo.features import Backbone, encode_split
from clipdemo.images import load_image
from clipdemo.zeroshot import CONTROL_CHARS, MAX_LABEL_CHARS

MAX_UPLOADS = 200  # images a visitor may search over
MAX_FOLDER_IMAGES = 10_000  # files in a folder index (the CLI, the Admin-configured dataset)
MAX_TOP_K = 50
MAX_PAIRS = 50  # near-duplicate pairs listed
DUPLICATE_THRESHOLD = 0.95


class SearchError(UserError):
    """A search request can't be served; the message says why in one sentence."""


@dataclass
class SearchIndex:
    paths: list[str]  # the readable images, in the order given
    names: list[str]  # what a visitor is shown for each (a file name, or a path relative to the folder)
    features: torch.Tensor  # [N, D] L2-normalised
    labels: list[str] | None  # a group per image (its class folder), or None
    skipped: int  # files that could not be read as images
    unreadable: tuple[str, ...]  # "name: reason" of the first few of them
    clusters: list[str] | None = None  # k-means groups, computed once by ``groups``

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class Hit:
    rank: int
    path: str
    name: str
    score: float  # cosine similarity


def build_index(
    backbone,
    paths: Sequence,
    *,
    names: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    max_images: int = MAX_UPLOADS,
    cache_dir=None,
    key_parts: Sequence = (),
) -> SearchIndex:
    """Embed ``paths`` (each once; with ``cache_dir`` and ``key_parts`` naming their content, cached on disk)."""
    paths = [str(p) for p in paths]
    if not paths:
        raise SearchError("Add at least one image to search over.")
    if len(paths) > max_images:
        raise SearchError(f"Too many images: {len(paths)} given, at most {max_images} can be searched at once.")
    names = list(names) if names is not None else [Path(p).name for p in paths]
    encoded = encode_split(
        Backbone.of(backbone),
        Split(paths, [0] * len(paths)),
        cache_dir=cache_dir,
        key_parts=("search", *key_parts),
        progress=lambda event: None,
        name="search",
    )
    if len(encoded) == 0:
        raise SearchError(f"None of the {len(paths)} file(s) could be read as an image.")
    kept = encoded.kept.tolist()
    return SearchIndex(
        [paths[i] for i in kept],
        [names[i] for i in kept],
        encoded.features.float(),
        [labels[i] for i in kept] if labels is not None else None,
        encoded.skipped,
        encoded.unreadable,
    )


def folder_files(root) -> list[Path]:
    """Every non-hidden file under ``root`` (any depth, sorted): images are told from junk by their content."""
    root = Path(root)
    if not root.is_dir():
        raise SearchError(f"'{root}' is not a folder of images.")
    return sorted(
        f for f in root.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts)
    )


def index_folder(backbone, root, *, cache_dir=None, max_images: int = MAX_FOLDER_IMAGES) -> SearchIndex:
    """``build_index`` over ``folder_files(root)``; an image in a subfolder is labelled with that subfolder."""
    root = Path(root)
    files = folder_files(root)
    rel = [f.relative_to(root) for f in files]
    labels = [r.parts[0] if len(r.parts) > 1 else "(top folder)" for r in rel]
    stamp = [(str(r), f.stat().st_size, f.stat().st_mtime_ns) for r, f in zip(rel, files)]
    return build_index(
        backbone,
        files,
        names=[str(r) for r in rel],
        labels=labels if len(set(labels)) > 1 else None,
        max_images=max_images,
        cache_dir=cache_dir,
        key_parts=(fingerprint("search-folder", stamp),),
    )


def query_embedding(backbone, query) -> tuple[torch.Tensor, str]:
    """``([D] embedding, "text" | "image")``: an existing file or a PIL image is an image query, a string text."""
    backbone = Backbone.of(backbone)
    if not isinstance(query, str) or Path(query).is_file():
        return backbone.encode_images([load_image(query)])[0].float(), "image"
    text = " ".join(CONTROL_CHARS.sub("", query).split())[:MAX_LABEL_CHARS]
    if not text:
        raise SearchError("Type what to look for (e.g. 'a red car'), or give an image to search by example.")
    return backbone.encode_texts([text])[0].float(), "text"


def search(index: SearchIndex, query: torch.Tensor, top_k: int | None = None) -> list[Hit]:
    """The index's images by cosine similarity to ``query``, best first (ties: the earlier image); all, or ``top_k``."""
    if top_k is not None and not 1 <= top_k <= MAX_FOLDER_IMAGES:
        raise SearchError(f"Top-k must be a whole number from 1 to {MAX_FOLDER_IMAGES}.")
    scores = (index.features @ query.float()).numpy()
    order = np.argsort(-scores, kind="stable")[: top_k or None]
    return [Hit(r + 1, index.paths[i], index.names[i], float(scores[i])) for r, i in enumerate(order)]


def near_duplicates(
    index: SearchIndex, threshold: float = DUPLICATE_THRESHOLD, limit: int = MAX_PAIRS
) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, cosine)`` with ``i < j`` and cosine >= ``threshold``, most similar first, at most ``limit``."""
    if not 0 < threshold <= 1:
        raise SearchError("The near-duplicate similarity must be above 0 and at most 1.")
    sims = (index.features @ index.features.T).numpy()
    i, j = np.triu_indices(len(index), k=1)
    keep = sims[i, j] >= threshold - 1e-6
    i, j, s = i[keep], j[keep], sims[i, j][keep]
    order = np.argsort(-s, kind="stable")[:limit]
    return [(int(i[o]), int(j[o]), float(s[o])) for o in order]


def groups(index: SearchIndex, clusters: int | None = None, seed: int = 0) -> tuple[list[str], str]:
    """A group name per image and what the groups are: the class folders when there are some, else k-means
    clusters of the embeddings (``clusters``, or the k from 2 to 8 with the best silhouette score)."""
    if index.labels is not None:
        return list(index.labels), "label"
    if index.clusters is None or clusters:
        with threadpool_limits(1):  # tiny problems: OpenMP threads only wait on each other on a busy server
            index.clusters = _kmeans(index, clusters, seed)
    return list(index.clusters), "cluster"


def _kmeans(index: SearchIndex, clusters: int | None, seed: int) -> list[str]:
    x = index.features.numpy()
    candidates = [clusters] if clusters else list(range(2, min(8, len(index) - 1) + 1))
    if not candidates or len(index) < 3:
        return ["cluster 1"] * len(index)
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best, best_score = None, -2.0
    for k in candidates:
        assigned = KMeans(k, n_init=4, random_state=seed).fit_predict(x)
        score = silhouette_score(x, assigned) if len(set(assigned)) > 1 else -1.0
        if score > best_score + 1e-9:
            best, best_score = assigned, score
    return [f"cluster {c + 1}" for c in best]


def map_2d(
    index: SearchIndex, query: torch.Tensor | None = None, method: str = "pca", seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """``([N, 2] coordinates, [2] of the query or None)``: scikit-learn PCA (the query projected on the same
    axes), or t-SNE (the query embedded with the set, so it lands among its neighbours)."""
    with threadpool_limits(1):
        return _map_2d(index, query, method, seed)


def _map_2d(index: SearchIndex, query, method: str, seed: int):
    x = index.features.numpy().astype(np.float64)
    if method == "tsne":
        from sklearn.manifold import TSNE

        points = np.vstack([x, query.numpy()[None]]) if query is not None else x
        if len(points) < 4:
            raise SearchError("A t-SNE map needs at least 4 images; use PCA.")
        xy = TSNE(2, perplexity=min(30.0, (len(points) - 1) / 3), init="pca", random_state=seed).fit_transform(points)
        return (xy[:-1], xy[-1]) if query is not None else (xy, None)
    if method != "pca":
        raise SearchError("The map method must be pca or tsne.")
    from sklearn.decomposition import PCA

    if len(x) < 2:
        return np.zeros((len(x), 2)), (np.zeros(2) if query is not None else None)
    pca = PCA(min(2, len(x), x.shape[1]), random_state=seed).fit(x)
    pad = lambda a: np.pad(a, ((0, 0), (0, 2 - a.shape[1])))
    xy = pad(pca.transform(x))
    return xy, (pad(pca.transform(query.numpy()[None].astype(np.float64)))[0] if query is not None else None)
