"""SigLIP and SigLIP 2 through transformers, behind the one encoder interface (see ``clipdemo.encoders``).

What SigLIP users keep getting wrong, done here once, as the models were trained:

- scores are independent: ``sigmoid(logit_scale * cos + logit_bias)`` per (image, label), never a softmax over
  the labels (``scoring = "sigmoid"``; ``clipdemo.scoring`` applies each family's rule);
- text is padded to the model's full context (``padding="max_length"``): the text tower was trained on padded
  sequences and pools its last position, so shorter padding gives other embeddings;
- text is lowercased: SigLIP's tokenizer lowercases (``do_lower_case``) and SigLIP 2 was trained on lowercased
  text (its model card says so) although its Gemma tokenizer does not.

Images are squashed to the model's square input (no crop: SigLIP's processor resizes), so a relevancy map covers
the whole photo.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from clipdemo.devices import autocast, embedding, l2_normalize, pick_device, pick_precision
from clipdemo.errors import ModelUnavailable

SIGLIP_TYPES = ("siglip", "siglip2")


class SquashTransform:
    """SigLIP's preprocessing: resize to ``size`` (bicubic, aspect not kept), scale to [0, 1], normalise."""

    def __init__(self, size: tuple[int, int], mean, std, resample=Image.BICUBIC):
        self.size, self.resample = size, resample  # (width, height)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255

    def view(self, image: Image.Image) -> Image.Image:
        """The part of ``image`` the model sees: all of it."""
        return image

    def one(self, image: Image.Image) -> torch.Tensor:
        image = image.resize(self.size, self.resample)
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float()
        return (x - self.mean) / self.std

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.one(im) for im in images])


class SiglipEncoder:
    """A transformers SigLIP / SigLIP 2 model (``AutoModel`` + ``AutoProcessor``) from the Hub or a folder."""

    scoring = "sigmoid"

    def __init__(
        self,
        spec: str,
        path: str,
        hub_kwargs: dict,
        device: str = "auto",
        precision: str | None = None,
        batch_size: int = 32,
    ):
        from transformers import AutoModel, AutoProcessor

        self.name = spec
        self.device = pick_device(device)
        self.precision = pick_precision(self.device, precision)
        self.batch_size = batch_size
        # OSError / ValueError / KeyError from here become one ModelUnavailable sentence in clipdemo.encoders._build
        model = AutoModel.from_pretrained(path, use_safetensors=True, **hub_kwargs)
        processor = AutoProcessor.from_pretrained(path, **hub_kwargs)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.model_type = model.config.model_type
        self.tokenizer = processor.tokenizer
        self.context_length = model.config.text_config.max_position_embeddings
        self.logit_scale = float(model.logit_scale.exp())
        self.logit_bias = float(model.logit_bias)
        ip = processor.image_processor
        size = ip.size or {}
        if "height" not in size:  # SigLIP 2 NaFlex: variable patch grids, its processor does the work
            self.transform = None
            self.image_processor = ip
        else:
            self.transform = SquashTransform(
                (size["width"], size["height"]),
                ip.image_mean,
                ip.image_std,
                Image.Resampling(int(getattr(ip, "resample", Image.BICUBIC))),
            )

    def _pixels(self, images: list[Image.Image]) -> dict:
        if self.transform is not None:
            return {"pixel_values": self.transform(images).to(self.device)}
        return {k: v.to(self.device) for k, v in self.image_processor(images=images, return_tensors="pt").items()}

    @torch.inference_mode()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        out = [torch.empty(0, self.embed_dim)]
        for i in range(0, len(images), self.batch_size):
            with autocast(self.device, self.precision):
                features = self.model.get_image_features(**self._pixels(images[i : i + self.batch_size]))
                out.append(embedding(features).float().cpu())
        return l2_normalize(torch.cat(out))

    def _tokens(self, texts: list[str], truncation: bool = True) -> dict:
        return self.tokenizer(
            [t.lower() for t in texts],
            padding="max_length",
            truncation=truncation,
            max_length=self.context_length,
            return_tensors="pt" if truncation else None,
        )

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        out = [torch.empty(0, self.embed_dim)]
        for i in range(0, len(texts), self.batch_size):
            tokens = self._tokens(texts[i : i + self.batch_size])
            # SigLIP's text tower was trained without an attention mask: padding tokens are part of the input
            with autocast(self.device, self.precision):
                features = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device))
                out.append(embedding(features).float().cpu())
        return l2_normalize(torch.cat(out))

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens each text needs, before truncation to ``context_length`` (specials included)."""
        return [len(self.tokenizer(t.lower(), truncation=False)["input_ids"]) for t in texts]

    @property
    def embed_dim(self) -> int:
        return self.model.config.vision_config.hidden_size  # the pooled image token; text is projected to it

    def view(self, image: Image.Image) -> Image.Image:
        return image

    @torch.inference_mode()
    def encode_patches(self, image: Image.Image) -> torch.Tensor:
        """[h, w, D] L2-normalised patch tokens in the joint space (MaskCLIP-style: each patch goes through the
        attention-pooling head's value path and MLP, the way the pooled token does)."""
        if self.transform is None:
            raise ModelUnavailable("Relevancy maps need a fixed-resolution ViT; this SigLIP 2 NaFlex model has none.")
        with autocast(self.device, self.precision):
            hidden = self.model.vision_model(**self._pixels([image])).last_hidden_state[0]  # post-layernormed
            head = self.model.vision_model.head
            dim = hidden.shape[-1]
            attention = head.attention
            v = torch.nn.functional.linear(
                hidden, attention.in_proj_weight[2 * dim :], attention.in_proj_bias[2 * dim :]
            )
            x = attention.out_proj(v)
            x = x + head.mlp(head.layernorm(x))
        side = int(round(x.shape[0] ** 0.5))
        return l2_normalize(x.float().cpu()).view(side, side, -1)

    def describe(self) -> str:
        return f"{self.name} on {self.device.type} ({self.precision}, {self.model_type}: sigmoid scores)"
