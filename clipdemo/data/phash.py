"""What the leak check sees of an image: its pixels, not its bytes.

A training photo re-saved as JPEG, or resized, and dropped into the test folder has other bytes but is the same
picture. Each image is looked at once (``look``): decoded by the one safe opener at a reduced scale
(``clipdemo.images.load_thumbnail``: JPEG decodes at about 1/8 of the work), and summarised as

- a 64-bit DCT perceptual hash (pHash) of its luminance: a 32 x 32 grey thumbnail, its 2-D DCT, the 8 x 8
  lowest frequencies compared with their median;
- an 8 x 8 colour thumbnail (192 bytes), because the hash is blind to hue: a red and a green circle in the same
  place hash alike;
- the sha1 of its bytes (exact copies, and the only identity of a flat image, below).

Two images are the same picture when their bytes are identical, or when their hashes differ in at most
``MAX_DISTANCE`` bits and their colour thumbnails by at most ``MAX_COLOUR`` on average (0..255). Both thresholds
were chosen by measurement, with margin (``bench/leak_check.py``, numbers in ``bench/README.md``): copies (JPEG
quality 95 to 40, halved, quartered, PNG to JPEG, at least 32 px on the short side) land within 10 bits and 4.3
levels; distinct photos never come closer than 18 bits; built-in shapes of one colour and shape (alike by design)
come as close as 6 bits, but those within 12 bits differ in colour by 11.3 levels or more. A copy shrunk below
32 px is out of reach (a quarter of a 64-px shape measured 16 bits).

What counts as a copy: the same picture, whatever its file. Two different photos of the same thing are not,
nor two shapes drawn with the same colour and shape (every built-in image is its own draw). An image with no
structure to hash (a flat thumbnail: one colour, under ``FLAT`` grey levels of spread, like a blank frame) has
no perceptual identity: it matches only its exact bytes. A file that does not decode is unreadable: it never
enters the comparison (its look has ``error``), and the encoders skip, count and name it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipdemo.images import ImageError, load_thumbnail

MAX_DISTANCE = 12  # bits of 64: copies measured at <= 10, distinct photos at >= 18 (bench/leak_check.py)
MAX_COLOUR = 8.0  # mean absolute difference of the 8 x 8 colour thumbnails: copies <= 4.3, lookalike shapes >= 11.3
FLAT = 2.0  # std of the 32 x 32 grey thumbnail below which an image has no structure to hash
HASH_SIDE, LOW, COLOUR_SIDE = 32, 8, 8
VERSION = 1  # bump when the look changes: it keys the disk cache

_memo: dict[tuple, tuple] = {}  # (path, size, mtime_ns) or the bytes' sha1 -> look row: a re-check reads nothing


@dataclass
class Looks:
    """The looks of a list of images (arrays, one row each); ``names`` say which image, for the report."""

    names: list[str]
    digests: list[str]  # sha1 of the bytes; "" for an unreadable file
    hashes: np.ndarray  # [N] uint64 pHash (0 where not ``hashed``)
    hashed: np.ndarray  # [N] bool: readable and not flat
    colours: np.ndarray  # [N, 192] uint8
    errors: list[str]  # "" when readable, else why not

    def __len__(self) -> int:
        return len(self.names)

    @property
    def readable(self) -> np.ndarray:
        return np.array([not e for e in self.errors], dtype=bool)

    def take(self, rows: Sequence[int]) -> Looks:
        rows = list(rows)
        return Looks(
            [self.names[i] for i in rows],
            [self.digests[i] for i in rows],
            self.hashes[rows] if rows else self.hashes[:0],
            self.hashed[rows] if rows else self.hashed[:0],
            self.colours[rows] if rows else self.colours[:0],
            [self.errors[i] for i in rows],
        )

    @classmethod
    def concat(cls, parts: Sequence[Looks]) -> Looks:
        return cls(
            [n for p in parts for n in p.names],
            [d for p in parts for d in p.digests],
            np.concatenate([p.hashes for p in parts]).astype(np.uint64),
            np.concatenate([p.hashed for p in parts]).astype(bool),
            np.concatenate([p.colours for p in parts]).astype(np.uint8).reshape(-1, 3 * COLOUR_SIDE**2),
            [e for p in parts for e in p.errors],
        )

    @classmethod
    def of_rows(cls, names: Sequence[str], rows: Sequence[tuple]) -> Looks:
        """From ``look`` rows: (digest, hash or None, colour bytes or None, error)."""
        colour0 = bytes(3 * COLOUR_SIDE**2)
        return cls(
            list(names),
            [r[0] for r in rows],
            np.array([r[1] or 0 for r in rows], dtype=np.uint64),
            np.array([r[1] is not None for r in rows], dtype=bool),
            np.frombuffer(b"".join(r[2] or colour0 for r in rows), dtype=np.uint8)
            .reshape(len(rows), len(colour0))
            .copy(),
            [r[3] for r in rows],
        )


def phash(grey: np.ndarray) -> int:
    """The 64-bit DCT hash of a ``HASH_SIDE`` square grey array."""
    from scipy.fft import dctn

    low = dctn(grey.astype(np.float64), norm="ortho")[:LOW, :LOW].ravel()
    bits = low > np.median(low)
    return int(np.packbits(bits).view(">u8")[0])


def look(ref) -> tuple:
    """One image's look row: (sha1 of its bytes, pHash or None when flat, 8 x 8 colour thumbnail, error).
    Unreadable: ("", None, None, the reason). Remembered per file (path, size, mtime) or per bytes digest."""
    key = _key(ref)
    if key is not None and key in _memo:
        return _memo[key]
    try:
        image = load_thumbnail(ref, 2 * HASH_SIDE)
        data = ref if isinstance(ref, (bytes, bytearray, memoryview)) else Path(ref).read_bytes()
    except (ImageError, OSError) as e:
        row = ("", None, None, str(e) if isinstance(e, ImageError) else "The image file could not be opened.")
    else:
        from PIL import Image

        grey = np.asarray(image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX), dtype=np.float32)
        colour = np.asarray(image.resize((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BOX), dtype=np.uint8)
        hashed = phash(grey) if grey.std() >= FLAT else None
        row = (hashlib.sha1(data).hexdigest(), hashed, colour.tobytes(), "")
    if key is not None:
        _memo[key] = row
    return row


def _key(ref) -> tuple | None:
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return ("bytes", hashlib.sha1(ref).hexdigest())
    try:
        st = os.stat(ref)
        return ("path", os.fspath(ref), st.st_size, st.st_mtime_ns)
    except (OSError, TypeError, ValueError):
        return None


def first_matches(queries: Looks, refs: Looks, *, earlier_only: bool = False) -> np.ndarray:
    """For each query, the index of the first ref that is the same picture (see the module docstring), or -1.
    Unreadable images never match. ``earlier_only``: ``refs`` is ``queries`` itself and a row may match only rows
    before it (repeats within one list)."""
    found = np.full(len(queries), -1, dtype=np.int64)
    if not len(queries) or not len(refs):
        return found
    q_ok, r_ok = queries.readable, refs.readable
    first_digest: dict[str, int] = {}
    for j, d in enumerate(refs.digests):
        if r_ok[j]:
            first_digest.setdefault(d, j)
    for i, d in enumerate(queries.digests):
        j = first_digest.get(d, -1) if q_ok[i] else -1
        if j >= 0 and (not earlier_only or j < i):
            found[i] = j
    hashed_refs = np.flatnonzero(refs.hashed & r_ok)
    todo = np.flatnonzero((found < 0) & queries.hashed & q_ok)
    if not len(hashed_refs) or not len(todo):
        return found
    ref_hashes, ref_colours = refs.hashes[hashed_refs], refs.colours[hashed_refs].astype(np.int16)
    chunk = max(1, (1 << 22) // len(hashed_refs))  # queries per step: at most 4M distances (32 MB) at a time
    for start in range(0, len(todo), chunk):
        rows = todo[start : start + chunk]
        near = np.bitwise_count(queries.hashes[rows, None] ^ ref_hashes[None, :]) <= MAX_DISTANCE
        if earlier_only:
            near &= hashed_refs[None, :] < rows[:, None]
        qi, ri = np.nonzero(near)  # candidates, by query then ref: the colour check on those only
        close = np.abs(queries.colours[rows[qi]].astype(np.int16) - ref_colours[ri]).mean(axis=1) <= MAX_COLOUR
        qi, ri = qi[close], ri[close]
        first = np.unique(qi, return_index=True)[1]  # each query's first (lowest) matching ref
        found[rows[qi[first]]] = hashed_refs[ri[first]]
    return found
