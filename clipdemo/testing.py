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
            vocab_size=len(tokenizer), hidden_size=tw, intermediate_size=4 * tw, num_hidden_layers=tl,
            num_attention_heads=th, max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=vw, intermediate_size=4 * vw, num_hidden_layers=vl, num_attention_heads=vh,
            image_size=size, patch_size=patch,
        ),
        projection_dim=s["projection"],
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
