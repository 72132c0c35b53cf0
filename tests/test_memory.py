"""glibc's malloc arena cap: applied in a fresh process, an explicit MALLOC_ARENA_MAX wins, and app.py sets it
before it launches."""

import platform
import subprocess
import sys

import pytest

from clipdemo.memory import limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_arena_cap_applies_on_glibc():
    # In a child, so the test process keeps its own allocator settings.
    code = "from clipdemo.memory import limit_malloc_arenas; print(limit_malloc_arenas())"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "."}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "True"


def test_explicit_environment_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is (sys.platform.startswith("linux"))


def test_app_caps_arenas_before_serving():
    source = open("app.py").read()
    assert source.index("limit_malloc_arenas()") < source.index(".launch(")
