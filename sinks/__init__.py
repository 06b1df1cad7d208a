"""Built-in sinks, one module each, installed as ``bmslogger.sinks.<module>``.

A sink module holds its `SinkType` declaration, its ``register_sink_types`` hook and the
`bmslogger.sink.Sink` subclass. Modules are never named after a library they import
(``csvfile``, not ``csv``).
"""
