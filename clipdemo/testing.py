"""Build randomly initialised HF CLIP folders, for tests and benchmarks on machines without the Hub.

Speed does not depend on weight values, so ``make_clip_folder(path, "vit-b-32")`` measures real
ViT-B/32 latency; ``"tiny"`` is for fast tests. Both load through the same code path as a Hub model.
"""

import json
from pathlib import Path

from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

SHAPES = {
    # text: width, layers, heads; vision: width, layers, heads, image, patch; projection
    "tiny": dict(text=(32, 2, 2), vision=(32, 2, 2, 32, 8), projection=16),
    "vit-b-32": dict(text=(512, 12, 8), vision=(768, 12, 12, 224, 32), projection=512),
}


def write_byte_tokenizer(folder: Path, context_length: int = 77) -> CLIPTokenizer:
    """A working CLIPTokenizer with a byte-level vocabulary and no merges."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=context_length)


def make_clip_folder(path, shape: str = "tiny", seed: int = 0) -> Path:
    """Write a random CLIP model, tokenizer and image processor to ``path`` with save_pretrained."""
    import torch

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
            max_position_embeddings=77,
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
