"""bmslogger: a headless, plugin-based data logger for BMS and solar charge controllers.

This module stays tiny so ``bmslogger --help`` starts fast; the public API for plugin
authors is ``hookimpl`` here and the types in `bmslogger.model`, `bmslogger.options`,
`bmslogger.errors`, `bmslogger.driver` and `bmslogger.simulator`.
"""

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``@bmslogger.hookimpl``.
hookimpl = pluggy.HookimplMarker("bmslogger")

__all__ = ["__version__", "hookimpl"]
