"""The Gradio app: one builder per tab, handlers of a few lines over the library.

``build_app(settings)`` returns the Blocks; ``launch_kwargs(settings)`` the safe launch options
(upload cap, no error details, no monitoring endpoint, nothing served from the checkpoint or data folders,
bounded per-session memory).
"""

from __future__ import annotations

import gradio as gr

from clipdemo.auth import AdminAuth
from clipdemo.jobs import JobRunner
from clipdemo.serving import Served
from clipdemo.settings import Settings
from clipdemo.ui import admin_tab, cars_tab, fewshot_tab, pokemon_tab, search_tab, tools, zeroshot_tab
from clipdemo.ui.common import guard_api_inputs
from clipdemo.ui.theme import CSS, theme

QUEUE_SIZE = 64  # waiting events beyond this get an explicit "queue full" answer
CONCURRENCY = 2  # model calls at once: the machine has 2 cores, more only adds latency
# Gradio keeps a copy of every component's config per session (~180 KiB for this app), 10,000 sessions by
# default: close to 2 GB on a busy public Space. The least recently used beyond this are dropped.
SESSION_CAPACITY = 1000


def build_app(settings: Settings | None = None, runner: JobRunner | None = None) -> gr.Blocks:
    settings = settings or Settings.from_env()
    served = Served(settings)
    runner = runner or JobRunner.from_settings(settings)
    with gr.Blocks(title="clipdemo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            "# clipdemo\nShow, use and retrain CLIP: zero-shot on your own labels, Stanford Cars, "
            "and a CLIP trained from scratch."
        )
        # "wrap": on a narrow screen the tab names go onto a second line instead of behind an unlabelled "•••"
        with gr.Tabs(overflow_behavior="wrap", elem_id="tabs"):
            with gr.Tab("Zero-shot", id="zero-shot"):
                zeroshot_outputs = zeroshot_tab.build(served)
            with gr.Tab("Cars", id="cars"):
                cars_tab.build(served)
            with gr.Tab("Your classes", id="your-classes"):
                fewshot_tab.build(served)
            with gr.Tab("Search", id="search"):
                search_tab.build(served)
            with gr.Tab("Pokemon (scratch CLIP)", id="pokemon"):
                pokemon_card = pokemon_tab.build(served)
            with gr.Tab("Admin", id="admin"):
                admin_tab.build(served, runner, AdminAuth.from_settings(settings))
        app.load(lambda: zeroshot_tab.model_status(served), None, zeroshot_outputs, api_visibility="private")
        app.load(lambda: pokemon_tab.card_markdown(served), None, pokemon_card, api_visibility="private")
        tools.build(served)  # the HTTP API's and MCP's tools, on hidden components
    tools.hide_other_endpoints_from_mcp(app)
    guard_api_inputs(app)  # malformed API input: one sentence, no traceback
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return app


def launch_kwargs(settings: Settings) -> dict:
    blocked = [str(settings.checkpoint_dir)] + [str(p) for p in (settings.data_root, settings.search_root) if p]
    return dict(
        max_file_size=settings.max_file_size,
        show_error=False,
        enable_monitoring=False,
        blocked_paths=blocked,
        state_session_capacity=SESSION_CAPACITY,
        theme=theme(),
        css=CSS,
        mcp_server=settings.mcp,  # CLIPDEMO_MCP: the tools (clipdemo/ui/tools.py) at /gradio_api/mcp/
    )
