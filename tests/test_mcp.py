"""The app as an MCP server, driven by the ``mcp`` client SDK over streamable HTTP against a running app (tiny
model): the tool list (the four tools, no admin or per-session event among them, each described), a zero-shot
call returning ranked labels, and a bad image answered with the same one sentence the UI shows."""

from __future__ import annotations

import ast
import asyncio
import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mcp import ClientSession
from mcp.client import streamable_http
from PIL import Image

from clipdemo.images import ImageError, load_image
from clipdemo.settings import Settings
from clipdemo.testing import app_served
from clipdemo.ui.tools import TOOLS

# the client's newer name, with the older one (mcp < 1.24) as a fallback
http_client = getattr(streamable_http, "streamable_http_client", None) or streamable_http.streamablehttp_client
BAD_IMAGE = b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8


@pytest.fixture(scope="module")
def mcp_url(tiny_clip, tmp_path_factory):
    settings = Settings(model=str(tiny_clip), checkpoint_dir=tmp_path_factory.mktemp("checkpoints"), mcp=True)
    with app_served(settings) as url:
        yield url.rstrip("/") + "/gradio_api/mcp/"


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(out, format="PNG")
    return out.getvalue()


def session_call(url: str, work):
    async def run():
        async with http_client(url) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)

    # on a thread of its own: Playwright's sync API (the browser tests) keeps an event loop running on this one
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def test_tool_list_is_the_four_tools_with_descriptions(mcp_url):
    import httpx

    assert httpx.get(mcp_url + "schema").status_code == 200  # what the CLIPDEMO_MCP=0 test below sees as 404
    tools = session_call(mcp_url, lambda s: s.list_tools()).tools
    names = {t.name for t in tools}
    assert names == set(TOOLS), names
    assert not [n for n in names if n.startswith(("admin", "fewshot", "search", "lambda"))]
    zero_shot = next(t for t in tools if t.name == "zero_shot_classify")
    assert "Zero-shot image classification" in zero_shot.description
    properties = zero_shot.inputSchema["properties"]
    assert set(zero_shot.inputSchema["required"]) == {"image", "labels"}
    assert "comma- or newline-separated" in properties["labels"]["description"]
    assert properties["templates"]["default"] == "photo"
    for tool in tools:
        assert len(tool.description) > 80 and all(p.get("description") for p in tool.inputSchema["properties"].values())


def test_zero_shot_call_returns_ranked_labels(mcp_url):
    labels = ["a red square", "a blue square", "a green square"]
    arguments = {"image": data_uri(png("red")), "labels": ", ".join(labels), "top_k": 2}
    result = session_call(mcp_url, lambda s: s.call_tool("zero_shot_classify", arguments))
    assert not result.isError, result.content
    entry = ast.literal_eval(result.content[0].text)  # Gradio writes a JSON output as its Python repr
    scores = [p["score"] for p in entry["predictions"]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert {p["label"] for p in entry["predictions"]} <= set(labels)
    assert entry["scoring"] == "softmax" and entry["independent"] is False


def test_where_returns_an_image(mcp_url):
    arguments = {"image": data_uri(png("red")), "labels": "a red square, a blue square"}
    result = session_call(mcp_url, lambda s: s.call_tool("where_in_image", arguments))
    assert not result.isError, result.content
    assert result.content[0].type == "image" and result.content[0].mimeType == "image/png", str(result.content)[:600]
    Image.open(io.BytesIO(base64.b64decode(result.content[0].data))).verify()


def test_bad_image_is_the_uis_sentence(mcp_url, tmp_path: Path):
    with pytest.raises(ImageError) as refused:
        load_image(BAD_IMAGE)  # what the Zero-shot tab says for this file
    arguments = {"image": data_uri(BAD_IMAGE), "labels": "a cat, a dog"}
    result = session_call(mcp_url, lambda s: s.call_tool("zero_shot_classify", arguments))
    assert result.isError
    text = " ".join(c.text for c in result.content)
    assert str(refused.value) in text, text
    assert "Traceback" not in text and "/tmp/" not in text


def test_clipdemo_mcp_setting(monkeypatch):
    from clipdemo.errors import ConfigError
    from clipdemo.settings import check_environment
    from clipdemo.ui.app import launch_kwargs

    monkeypatch.delenv("CLIPDEMO_MCP", raising=False)
    assert Settings.from_env().mcp is True and launch_kwargs(Settings.from_env())["mcp_server"] is True
    for off in ("0", "false", "Off", " no "):
        monkeypatch.setenv("CLIPDEMO_MCP", off)
        assert launch_kwargs(Settings.from_env())["mcp_server"] is False
    monkeypatch.setenv("CLIPDEMO_MCP", "maybe")
    with pytest.raises(ConfigError, match="CLIPDEMO_MCP must be 1 or 0"):
        check_environment()


def test_mcp_off_serves_no_endpoint(tiny_clip, tmp_path):
    import httpx

    settings = Settings(model=str(tiny_clip), checkpoint_dir=tmp_path, mcp=False)
    with app_served(settings) as url:
        assert httpx.get(url.rstrip("/") + "/gradio_api/mcp/schema").status_code == 404
        assert httpx.get(url).status_code == 200


def test_an_image_url_on_a_private_address_is_not_fetched(mcp_url):
    """Images by URL are fetched by Gradio's SSRF-protected downloader: a loopback address (here the app's own
    port, which would answer) is refused, so a public Space can't be made to read its own network."""
    own_file = mcp_url.replace("/gradio_api/mcp/", "/gradio_api/info")
    arguments = {"image": own_file, "labels": "a cat, a dog"}
    result = session_call(mcp_url, lambda s: s.call_tool("zero_shot_classify", arguments))
    # refused before our code runs (safehttpx: "Hostname 127.0.0.1 failed validation", logged), not as "not an image"
    assert result.isError and "not an image" not in result.content[0].text, result.content
