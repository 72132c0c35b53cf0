"""clipdemo: show, use and retrain CLIP. The library never imports gradio; see ``clipdemo.ui`` for the app.

The Python API (``clipdemo.api``) is imported on first use, so ``import clipdemo`` stays light (no torch)::

    from clipdemo import ZeroShot
    ZeroShot("openai/clip-vit-base-patch32")(["photo.jpg"], ["a cat", "a dog"])
"""

__version__ = "0.1.0"
__all__ = ["ZeroShot", "TrainedHead"]


def __getattr__(name: str):
    if name in __all__:
        from clipdemo import api

        return getattr(api, name)
    raise AttributeError(f"module 'clipdemo' has no attribute {name!r}")
