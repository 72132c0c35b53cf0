"""The Gradio app: ``clipdemo.ui.app.build_app`` puts one module per tab together; ``common`` holds what they share.

This package is the only part of clipdemo that imports gradio.
"""
