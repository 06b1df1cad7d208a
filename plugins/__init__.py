"""Built-in device plugins, one sub-package per device family.

Each folder has the same shape: ``__init__.py`` (the `DeviceType` and its
``register_device_types`` hook, nothing heavy), ``protocol.py`` (sans-IO codec),
``driver.py``, ``simulator.py``, ``fields.py`` (every field emitted), ``sample.toml`` and
``README.md``. Installed as ``bmslogger.plugins.<name>`` and registered through one line
in the ``bmslogger`` entry-point group, exactly like a third-party plugin.
"""
