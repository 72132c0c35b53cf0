"""Byte-level tokenizer for the scratch CLIP: UTF-8 bytes plus three special ids outside 0..255.

The tutorial's version wrapped text in ``chr(2)``/``chr(3)``, padded with ``chr(0)`` and counted the
length in characters while encoding bytes, so any non-ASCII name (``Nidoran♀``, ``Flabébé``) or a caption
over 30 bytes broke it. Here the length is counted in bytes, the specials cannot collide with text,
truncation keeps the end token (the text encoder pools there), and it is cut at a character boundary so
``decode`` always gives back a clean prefix of the input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when ids are made: clipdemo.scratch.config (train --help) needs no torch
    import torch

PAD, SOT, EOT = 256, 257, 258
VOCAB_SIZE = 259  # 256 byte values + the three specials


class ByteTokenizer:
    """``tok(["a red star"]) -> (ids [B, T] int64, mask [B, T] bool)``; ``mask`` is True on real tokens.

    The end token of row ``i`` sits at ``mask[i].sum() - 1``. ``pad_to="longest"`` pads a batch to its
    longest row (fewer positions to attend over); ``"max"`` always pads to ``context_length``.
    """

    vocab_size = VOCAB_SIZE
    pad_id, sot_id, eot_id = PAD, SOT, EOT

    def __init__(self, context_length: int = 32):
        if context_length < 3:
            raise ValueError("context_length must leave room for start, end and at least one byte")
        self.context_length = context_length

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, start and end included, truncated to ``context_length``."""
        data = text.encode("utf-8")
        room = self.context_length - 2
        if len(data) > room:
            cut = room
            while cut > 0 and (data[cut] & 0xC0) == 0x80:  # don't split a multi-byte character
                cut -= 1
            data = data[:cut]
        return [SOT, *data, EOT]

    def __call__(self, texts: list[str] | str, pad_to: str = "longest") -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        if isinstance(texts, str):
            texts = [texts]
        rows = [self.encode(t) for t in texts]
        width = self.context_length if pad_to == "max" else max((len(r) for r in rows), default=2)
        ids = torch.full((len(rows), width), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return ids, ids != PAD

    def decode(self, ids) -> str:
        """Text of one row of ids (specials and padding dropped)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def decode_batch(self, ids: torch.Tensor) -> list[str]:
        return [self.decode(row) for row in ids]
