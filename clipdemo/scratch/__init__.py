"""A CLIP trained from scratch (the second tutorial, fixed and made fast).

- ``config``: ``ScratchCLIPConfig`` + ``PRESETS`` ("seed" = the tutorial, "default" = ours), without torch.
- ``model``: ``ScratchCLIP``, ``contrastive_loss``. Modules only, no I/O.
- ``tokenizer``: ``ByteTokenizer``, UTF-8 bytes with start/end/pad ids outside 0..255.
- ``encoder``: ``ScratchEncoder``, a checkpoint folder as a ``clipdemo.encoders.Encoder``; the shared
  image preprocessing; the caption ``TEMPLATES``.
- ``train``: ``train_scratch(dataset, out_dir, ...)``, a plain function with a progress callback.
"""
