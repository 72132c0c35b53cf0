"""A small CLIP written from scratch: ViT image tower, byte-level text transformer, contrastive loss.

nanoGPT habits: one config dataclass with commented defaults (``clipdemo.scratch.config``), modules only, no I/O.
A checkpoint stores ``config.to_dict()`` and ``ScratchCLIP(ScratchCLIPConfig.from_dict(that))`` rebuilds the model.

The ``seed`` preset is the tutorial's model (the from-scratch CLIP tutorial this project grew from, kept
unchanged as that preset; docs/pokemon.md): pre-LN transformer blocks, a patchifying conv with a class token,
fixed sinusoidal positions, text pooled at the end token, linear projections into a joint space, a learnable
temperature. What differs in every preset: attention is one fused ``scaled_dot_product_attention`` call for
all heads (the tutorial looped over heads in Python and materialised a [B, T, T] mask); the key-padding mask
is broadcast from [B, T]; text is pooled at the true end-token position; the temperature is clamped at 100 as
in CLIP; images may come in as uint8 (the /255 is folded into the first layer). The ``default`` preset adds a
BatchNorm conv stem, learned positions and final LayerNorms, and is smaller and faster (see ``config.PRESETS``).
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import nn

from clipdemo.scratch.config import ScratchCLIPConfig

# --- modules ------------------------------------------------------------------------------------------


def sinusoidal_table(length: int, width: int) -> torch.Tensor:
    """The tutorial's table: sin on even dims, cos on odd dims, frequency 10000^(i/width) (i even)."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    i = torch.arange(width)
    freq = 10000.0 ** ((i - i % 2).double() / width)
    angle = pos / freq
    return torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle)).float()


class PositionalEmbedding(nn.Module):
    def __init__(self, length: int, width: int, kind: str):
        super().__init__()
        if kind == "learned":
            self.table = nn.Parameter(torch.randn(length, width) * 0.01)
        else:  # fixed, rebuilt from the config, so not saved
            self.register_buffer("table", sinusoidal_table(length, width), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[: x.shape[1]]  # text may be padded to less than context_length


class Attention(nn.Module):
    """Multi-head self-attention: one qkv matmul, one fused SDPA call for every head."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        # key_mask [B, T] (True = a real token) broadcasts over heads and queries as [B, 1, 1, T]
        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-LN transformer block (the tutorial's and CLIP's)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), key_mask)
        return x + self.mlp(self.ln2(x))


def conv_stem(width: int, patch_size: int) -> nn.Sequential:
    """log2(patch_size) stride-2 3x3 convs, channels doubling up to ``width``, BatchNorm + GELU between:
    [B, 3, S, S] -> [B, width, S / patch, S / patch], the grid a patchify conv gives (Xiao et al. 2021).

    BatchNorm measured best here (80% vs 50% held-out after 400 steps without a norm, 65-72% with
    GroupNorm/LayerNorm variants). Under DDP convert it with ``nn.SyncBatchNorm.convert_sync_batchnorm``
    so N processes compute the statistics of the global batch, as one process would.
    """
    n = int(math.log2(patch_size))
    chans = [3] + [max(8, width >> (n - 1 - i)) for i in range(n)]
    chans[-1] = width
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1, bias=i == n - 1))
        if i < n - 1:
            layers += [nn.BatchNorm2d(chans[i + 1]), nn.GELU()]
    return nn.Sequential(*layers)


_workspaces = threading.local()


def _workspace(shape, dtype) -> torch.Tensor:
    """A float buffer reused across calls (one per thread and shape)."""
    cache = _workspaces.__dict__.setdefault("buffers", {})
    key = (tuple(shape), dtype)
    if key not in cache:
        cache[key] = torch.empty(shape, dtype=dtype)
    return cache[key]


class _U8PatchLinear(torch.autograd.Function):
    """``F.linear(patches.float(), weight, bias)`` for uint8 ``patches`` [B, gh, gw, C, p, p] (a permuted view
    of the image batch) on the CPU: a few images at a time are cast into a reused float buffer, and
    backward casts the saved uint8 again instead of keeping a float copy.

    Why: at the seed preset (128 px images, 64 px patches) the float copy of a 1024-image batch is 200 MB,
    and allocating it fresh each step (page faults) cost more than the whole rest of the model's step.
    """

    CHUNK = 1 << 18  # floats per buffer (1 MB)

    @staticmethod
    def _chunks(patches, dtype):
        B, n, K = patches.shape[0], patches.shape[1] * patches.shape[2], math.prod(patches.shape[3:])
        step = max(1, _U8PatchLinear.CHUNK // (n * K))
        for i in range(0, B, step):
            chunk = patches[i : i + step]
            buf = _workspace((step, *patches.shape[1:]), dtype)[: len(chunk)].copy_(chunk)
            yield i * n, (i + len(chunk)) * n, buf.view(-1, K)

    @staticmethod
    def forward(ctx, patches, weight, bias):
        ctx.save_for_backward(patches)
        B, gh, gw = patches.shape[:3]
        out = torch.empty(B * gh * gw, weight.shape[0], dtype=weight.dtype)
        for a, b, rows in _U8PatchLinear._chunks(patches, weight.dtype):
            torch.addmm(bias, rows, weight.T, out=out[a:b])
        return out.view(B, gh * gw, weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        (patches,) = ctx.saved_tensors
        grad = grad_out.reshape(-1, grad_out.shape[-1])
        grad_weight = torch.zeros(grad.shape[1], math.prod(patches.shape[3:]), dtype=grad.dtype)
        for a, b, rows in _U8PatchLinear._chunks(patches, grad.dtype):
            grad_weight.addmm_(grad[a:b].T, rows)
        return None, grad_weight, grad.sum(0)


class ImageTower(nn.Module):
    def __init__(self, c: ScratchCLIPConfig):
        super().__init__()
        w = c.vision_width
        self.patch_size = c.patch_size
        if c.stem == "conv":
            self.patchify = conv_stem(w, c.patch_size)
        else:  # stored as a conv (the tutorial's module), applied as one matmul in embed_patches
            self.patchify = nn.Conv2d(3, w, kernel_size=c.patch_size, stride=c.patch_size)
        self.cls = nn.Parameter(torch.randn(1, 1, w) * w**-0.5)
        self.pos = PositionalEmbedding((c.image_size // c.patch_size) ** 2 + 1, w, c.pos_embedding)
        self.blocks = nn.ModuleList(Block(w, c.vision_heads, c.mlp_ratio) for _ in range(c.vision_layers))
        self.ln = nn.LayerNorm(w) if c.final_ln else nn.Identity()
        self.proj = nn.Parameter(torch.randn(w, c.embed_dim) * w**-0.5)

    def embed_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] floats in [0, 1], or uint8 in [0, 255] -> [B, patches, width]."""
        if isinstance(self.patchify, nn.Sequential):
            x = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels
            return self.patchify(x).flatten(2).transpose(1, 2)
        # A conv whose kernel equals its stride is a matmul over flattened patches. Done that way the
        # weight gradient is one GEMM (mkldnn's conv backward took 4x as long at 64 px patches), and
        # uint8 input is rearranged while still one byte per value, with the /255 folded into the weight.
        p, conv = self.patch_size, self.patchify
        B, C, H, W = pixels.shape
        patches = pixels.view(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # [B, gh, gw, C, p, p]
        weight = conv.weight.view(conv.out_channels, -1)
        if pixels.dtype == torch.uint8 and pixels.device.type == "cpu" and torch.is_grad_enabled():
            return _U8PatchLinear.apply(patches, weight / 255, conv.bias)
        x = patches.reshape(B, (H // p) * (W // p), C * p * p)
        if pixels.dtype == torch.uint8:
            x, weight = x.to(weight.dtype), weight / 255
        return F.linear(x, weight, conv.bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embed_patches(pixels)
        x = self.pos(torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1))
        for block in self.blocks:
            x = block(x)
        return self.ln(x[:, 0]) @ self.proj  # the class token


class TextTower(nn.Module):
    def __init__(self, c: ScratchCLIPConfig):
        super().__init__()
        w = c.text_width
        self.embed = nn.Embedding(c.vocab_size, w)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.pos = PositionalEmbedding(c.context_length, w, c.pos_embedding)
        self.blocks = nn.ModuleList(Block(w, c.text_heads, c.mlp_ratio) for _ in range(c.text_layers))
        self.ln = nn.LayerNorm(w) if c.final_ln else nn.Identity()
        self.proj = nn.Parameter(torch.randn(w, c.embed_dim) * w**-0.5)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.pos(self.embed(tokens))
        for block in self.blocks:
            x = block(x, mask)
        end = mask.sum(dim=1) - 1  # the end token: the last real position of each row
        return self.ln(x[torch.arange(x.shape[0], device=x.device), end]) @ self.proj


class ScratchCLIP(nn.Module):
    def __init__(self, config: ScratchCLIPConfig):
        super().__init__()
        self.config = config
        self.visual = ImageTower(config)
        self.text = TextTower(config)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: [B, 3, S, S], floats in [0, 1] or uint8 -> [B, embed_dim], L2-normalised."""
        return F.normalize(self.visual(pixels), dim=-1)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens, mask: [B, T] from ``ByteTokenizer`` -> [B, embed_dim], L2-normalised."""
        return F.normalize(self.text(tokens, mask), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor):
        """Both towers at once (what DDP wraps): ``(image_features, text_features, logit scale)``."""
        return self.encode_image(pixels), self.encode_text(tokens, mask), self.scale()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """CLIP's symmetric cross-entropy: row i of each side matches row i of the other.

    A pure function of the features, so distributed training can pass features all-gathered from
    every rank (with gradients) without touching the model.
    """
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
