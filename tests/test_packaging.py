"""The installable package: ``pyproject.toml`` declares ``requirements.txt``'s packages (the Space's list) and a
``clipdemo`` command; in a fresh virtual environment ``pip install -e .`` gives a ``clipdemo`` that works from any
folder (checkpoints found through the settings, not the working directory).

The environment sees this machine's packages (``--system-site-packages``) and pip may not download anything
(``--no-index``): the install must be satisfied by what is here (torch included: never a newer one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv

import tomllib
from packaging.requirements import Requirement

from clipdemo.settings import REPO_ROOT


def requirement_lines(path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {str(Requirement(line)) for line in lines if line and not line.startswith("-")}


def test_pyproject_declares_the_requirements_and_the_command():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert {str(Requirement(r)) for r in project["dependencies"]} == requirement_lines(REPO_ROOT / "requirements.txt")
    assert project["scripts"] == {"clipdemo": "clipdemo.__main__:run"}
    torch = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "torch")
    assert "2.13.0" in torch.specifier and "2.13.1" not in torch.specifier  # never a newer torch than the wheel here


def test_pip_install_e_gives_a_working_clipdemo_command(tmp_path, tiny_clip):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python, command = env_dir / "bin" / "python", env_dir / "bin" / "clipdemo"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index", "--no-build-isolation"]
        + ["-e", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPDEMO_") and k != "PYTHONPATH"}

    def clipdemo(*args):
        done = subprocess.run(
            [str(command), *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert clipdemo("--help").startswith("usage: clipdemo")
    versions = json.loads(clipdemo("versions", "scratch").splitlines()[-1])  # the checkout's checkpoints/, via settings
    assert any(v["version"] == "shapes-v1" and v["served"] for v in versions), versions
    env["CLIPDEMO_CHECKPOINT_DIR"] = str(tmp_path / "checkpoints")  # the ONNX export it makes: not in the checkout
    image = REPO_ROOT / "examples" / "shapes" / "red_circle.png"
    out = json.loads(
        clipdemo("zero-shot", "--model", str(tiny_clip), "--labels", "a circle, a star", str(image)).splitlines()[-1]
    )
    assert [p["label"] for p in out[0]["predictions"]] and out[0]["image"] == str(image)
    assert (tmp_path / "checkpoints" / ".cache" / "onnx").is_dir()  # the settings' folder, wherever it runs
