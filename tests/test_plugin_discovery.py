"""Third-party plugins are found exactly like the built-ins: through the entry-point group.

The test builds a tiny third-party distribution with one device type and one sink type,
installs it into a virtual environment that sees this bmslogger, and checks that
``list-plugins`` and the registry know both. A duplicate type name is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest

from bmslogger import hookimpl
from bmslogger.errors import PluginError
from bmslogger.manager import build_registry, get_plugin_manager
from bmslogger.model import DeviceType, PortSettings, SinkType

PLUGIN_SOURCE = '''
"""A third-party bmslogger plugin used by the test suite."""
from bmslogger import hookimpl
from bmslogger.model import DeviceType, PortSettings, SinkType
from bmslogger.options import Option

DEVICE = DeviceType(
    name="acme", title="ACME test BMS", options=(Option("cells", "int", 4),),
    port_defaults=PortSettings(), driver="acme_bms:Driver", simulator="acme_bms:Sim",
    fields="acme_bms:FIELDS",
)
FIELDS = ()

@hookimpl
def register_device_types():
    return [DEVICE]

@hookimpl
def register_sink_types():
    return [SinkType(name="acme-sink", title="ACME sink", options=(), sink="acme_bms:Sink")]
'''


@pytest.mark.slow
def test_installed_third_party_plugin_is_listed(tmp_path: Path) -> None:
    src = tmp_path / "acme"
    src.mkdir()
    (src / "acme_bms.py").write_text(PLUGIN_SOURCE)
    (src / "pyproject.toml").write_text(textwrap.dedent(
        """
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "acme-bms"
        version = "1.0"
        [tool.setuptools]
        py-modules = ["acme_bms"]
        [project.entry-points.bmslogger]
        acme = "acme_bms"
        """
    ))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", str(src)], check=True, capture_output=True)
    out = subprocess.run([py, "-m", "bmslogger", "list-plugins", "--format", "json"],
                         capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    rows = {(r["kind"], r["name"]): r for r in json.loads(out)}
    assert rows[("device", "acme")]["plugin"] == "acme"
    assert rows[("sink", "acme-sink")]["title"] == "ACME sink"
    assert ("device", "daly") in rows  # the built-ins are still there, found the same way


class _Duplicate:
    @hookimpl
    def register_device_types(self) -> list[DeviceType]:
        return [DeviceType(name="daly", title="impostor", options=(), port_defaults=PortSettings(),
                           driver="x:y", simulator="x:y", fields="x:y")]


def test_duplicate_device_type_is_refused() -> None:
    pm = get_plugin_manager()
    pm.register(_Duplicate(), name="impostor")
    with pytest.raises(PluginError, match="'daly' registered by both"):
        build_registry(pm)


def test_unknown_hook_is_refused() -> None:
    class Typo:
        @hookimpl
        def register_devce_types(self) -> list:
            return []

    pm = get_plugin_manager(autoload=False)
    pm.register(Typo(), name="typo")
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_builtins_come_from_entry_points() -> None:
    registry = build_registry()
    assert registry.sources["device:daly"] == "daly"
    assert registry.sources["sink:csv"] == "csv"
    assert isinstance(registry.sinks["csv"], SinkType)
    blocked = build_registry(get_plugin_manager(blocked=["daly"]))
    assert "daly" not in blocked.devices
