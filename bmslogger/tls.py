"""TLS settings shared by the network sinks (InfluxDB, HTTP, MQTT).

One declaration of the four keys, so every sink accepts the same names with the same
meaning, and one place that turns them into an `ssl.SSLContext`. Certificate paths are
``path`` options: relative ones resolve against the config file's folder.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from bmslogger.options import Option

TLS_OPTIONS: tuple[Option, ...] = (
    Option("verify_tls", "bool", True, help="check the server certificate"),
    Option("ca_cert", "path", "", help="CA bundle for TLS (default: system store)"),
    Option("client_cert", "path", "", help="client certificate file (mutual TLS)"),
    Option("client_key", "path", "", help="client certificate key file"),
)


@dataclass(frozen=True)
class TlsSettings:
    """The TLS keys of one sink table; None where a file is not set."""

    verify: bool
    ca: str | None
    cert: str | None
    key: str | None

    @classmethod
    def from_options(cls, options: Any) -> TlsSettings:
        return cls(
            verify=bool(options.get("verify_tls", True)),
            ca=str(options.get("ca_cert", "")) or None,
            cert=str(options.get("client_cert", "")) or None,
            key=str(options.get("client_key", "")) or None,
        )

    def context(self) -> ssl.SSLContext:
        """A client context: the system store or `ca`, the client certificate if set,
        and no certificate or host name check when `verify` is off."""
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx
