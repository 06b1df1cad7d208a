"""Rules that keep the codebase honest, checked over every module and plugin there is.

A new plugin folder is picked up here without editing this file.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bmslogger
from bmslogger import hookspecs
from bmslogger.config import parse_config
from bmslogger.manager import build_registry

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = build_registry()
DEVICES = sorted(REGISTRY.devices)

#: what a sans-IO codec may import: the standard library's pure parts and core helpers
CODEC_ALLOWED_BMSLOGGER = {"bmslogger.errors", "bmslogger.checksums", "bmslogger.sansio"}
CODEC_FORBIDDEN = {"serial", "socket", "time", "logging", "threading", "asyncio", "select",
                   "apscheduler", "os", "subprocess", "random", "modbus_tk"}


def _core_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(bmslogger.__path__, "bmslogger.")
                  if not m.name.startswith(("bmslogger.plugins.", "bmslogger.sinks.")))


@pytest.mark.parametrize("module", _core_modules())
def test_core_module_imports_cleanly_with_warnings_as_errors(module: str) -> None:
    proc = subprocess.run([sys.executable, "-W", "error", "-c", f"import {module}"],
                          capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("plugin", sorted(p.name for p in (ROOT / "plugins").iterdir()
                                          if (p / "protocol.py").exists()))
def test_codec_is_sans_io(plugin: str) -> None:
    tree = ast.parse((ROOT / "plugins" / plugin / "protocol.py").read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            assert top not in CODEC_FORBIDDEN, f"{plugin}/protocol.py imports {name}"
            if top == "bmslogger":
                assert name in CODEC_ALLOWED_BMSLOGGER, f"{plugin}/protocol.py imports {name}"


def test_every_hook_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    hooks = [n for n in dir(hookspecs) if not n.startswith("_")
             and hasattr(getattr(hookspecs, n), "bmslogger_spec")]
    assert hooks
    for name in hooks:
        assert f"`{name}`" in readme, name
        assert getattr(hookspecs, name).__doc__, f"hook {name} needs a docstring"


@pytest.mark.parametrize("plugin", DEVICES)
def test_plugin_package_import_is_light(plugin: str) -> None:
    """Listing plugins and `--help` must not import pyserial, Modbus or a codec."""
    code = (f"import sys, bmslogger.plugins.{plugin} as m; "
            "print(__import__('json').dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = set(json.loads(out))
    for heavy in ("serial", "modbus_tk", "apscheduler", f"bmslogger.plugins.{plugin}.driver",
                  f"bmslogger.plugins.{plugin}.protocol"):
        assert heavy not in loaded, f"importing the {plugin} plugin loads {heavy}"


@pytest.mark.parametrize("plugin", DEVICES)
def test_plugin_folder_has_its_parts_and_sample_config_validates(
        plugin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = ROOT / "plugins" / plugin
    for part in ("protocol.py", "driver.py", "simulator.py", "fields.py", "sample.toml",
                 "README.md"):
        assert (folder / part).exists(), f"plugins/{plugin}/{part} missing"
    sample = (folder / "sample.toml").read_text()
    # the commented defaults ("  # board = 1") must be valid too once switched on
    uncommented = re.sub(r"(?m)^(\s*)# ([a-z_]+ = )", r"\1\2", sample)
    for var in re.findall(r"\$\{(\w+)\}", uncommented):  # secrets from the environment
        monkeypatch.setenv(var, "example-secret")
    for text in (sample, uncommented):
        if f"[[devices.{plugin}]]" not in text:
            continue
        config = parse_config(text + '\n[sinks.stdout]\n', f"plugins/{plugin}/sample.toml",
                              REGISTRY)
        assert all(d.plugin == plugin for d in config.devices)


@pytest.mark.parametrize("plugin", DEVICES)
def test_readme_documents_every_option_and_field(plugin: str) -> None:
    dtype = REGISTRY.devices[plugin]
    readme = (ROOT / "plugins" / plugin / "README.md").read_text()
    for option in dtype.options:
        assert f"`{option.name}`" in readme, f"{plugin} README misses option {option.name}"
    for spec in dtype.load_fields():
        assert f"`{spec.field}`" in readme, f"{plugin} README misses {spec.field}"
    for write in dtype.writes:
        assert write.name in readme, f"{plugin} README misses command {write.name}"


@pytest.mark.parametrize("plugin", DEVICES)
def test_driver_and_simulator_classes_load(plugin: str) -> None:
    from bmslogger.driver import Driver
    from bmslogger.simulator import Simulator

    dtype = REGISTRY.devices[plugin]
    assert issubclass(dtype.load_driver(), Driver)
    assert issubclass(dtype.load_simulator(), Simulator)
    fields = dtype.load_fields()
    keys = [(f.measurement, f.field) for f in fields]
    assert len(keys) == len(set(keys)), "a field is declared twice"
    assert {f.type for f in fields} <= {"float", "int", "bool", "str"}


def test_sink_modules_are_light() -> None:
    code = ("import sys, bmslogger.sinks.csvfile, bmslogger.sinks.stdout; "
            "print('influxdb_client' in sys.modules, 'pymysql' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


def test_pyproject_registers_every_plugin_folder_and_sink_module() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][
        "bmslogger"]
    folders = {p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()}
    assert folders <= set(eps)
    for name, target in eps.items():
        importlib.util.find_spec(target)
        assert importlib.util.find_spec(target) is not None, (name, target)
