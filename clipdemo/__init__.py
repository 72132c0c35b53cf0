"""clipdemo: show, use and retrain CLIP. The library never imports gradio; see ``clipdemo.ui`` for the app."""

__version__ = "0.1.0"
