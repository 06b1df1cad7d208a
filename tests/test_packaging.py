"""The wheel holds only ``bmslogger/``; plugins and sinks install under its namespace.

These build a real wheel and install it into a fresh virtual environment, because the
failure they guard against (a plugin folder silently missing from the wheel, or a
top-level ``plugins`` package in site-packages) only shows in a real install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with the setuptools already installed, no network needed
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out),
          str(ROOT)], cwd=out)
    wheels = list(out.glob("bmslogger-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def _folders(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()
            if p.is_dir() and (p / "__init__.py").exists() and not p.name.startswith("_")}


def test_wheel_holds_only_the_bmslogger_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert names
    stray = [n for n in names if not (n.startswith("bmslogger/") or n.startswith("bmslogger-"))]
    assert stray == []
    top = next(n for n in names if n.endswith("top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top).decode().split() == ["bmslogger"]


def test_wheel_has_every_plugin_and_sink_folder(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    plugins = {n.split("/")[2] for n in names
               if n.startswith("bmslogger/plugins/") and n.count("/") >= 3}
    assert plugins == _folders(ROOT / "plugins")
    sinks = {Path(n).stem for n in names
             if n.startswith("bmslogger/sinks/") and n.endswith(".py") and n.count("/") == 2}
    expected = {p.stem for p in (ROOT / "sinks").glob("*.py")}
    assert sinks == expected
    for plugin in plugins:
        assert f"bmslogger/plugins/{plugin}/README.md" in names
        assert f"bmslogger/plugins/{plugin}/sample.toml" in names
    assert "bmslogger/default.toml" in names
    assert not any("/tests/" in n or "/testdata/" in n for n in names)


def test_installed_wheel_imports_from_outside_the_repo(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # system site packages give the dependencies without a download; the wheel's copy of
    # bmslogger must shadow the editable one, which the check below proves
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=tmp_path)
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
         cwd=tmp_path)
    script = textwrap.dedent(
        """
        import importlib, importlib.util, json, bmslogger
        from bmslogger.manager import build_registry
        reg = build_registry()
        mods = [d.driver.split(":")[0] for d in reg.devices.values()]
        mods += [s.sink.split(":")[0] for s in reg.sinks.values()]
        for m in mods:
            importlib.import_module(m)
        print(json.dumps({
            "file": bmslogger.__file__,
            "plugins": importlib.util.find_spec("plugins") is None,
            "sinks": importlib.util.find_spec("sinks") is None,
            "devices": sorted(reg.devices), "sink_types": sorted(reg.sinks),
        }))
        """
    )
    env = dict(os.environ, PYTHONPATH="")
    out = _run([python, "-c", script], cwd=tmp_path, env=env)
    import json

    info = json.loads(out.strip().splitlines()[-1])
    assert info["file"].startswith(str(venv)), info["file"]
    assert info["plugins"] and info["sinks"], "plugins/sinks must not be top-level packages"
    assert set(info["devices"]) >= _folders(ROOT / "plugins")
    assert {"csv", "stdout"} <= set(info["sink_types"])
    listed = _run([str(venv / "bin" / "bmslogger"), "list-plugins"], cwd=tmp_path, env=env)
    for name in _folders(ROOT / "plugins"):
        assert name in listed
