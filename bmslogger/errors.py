"""Every exception bmslogger raises on purpose, typed by the reaction it calls for.

The rest of the code never raises bare strings or foreign exceptions across a layer:
pyserial and socket errors become `TransportError` in the transport, client-library errors
become `SinkError`/`SinkUnavailable` in each sink, and bytes a device sent that make no
sense become a `ProtocolError` in the codec. The CLI maps these to exit codes and one-line
messages; anything else is a bug and is logged with its traceback once.
"""

from __future__ import annotations

from dataclasses import dataclass


class BmsLoggerError(Exception):
    """Base class of every error bmslogger raises deliberately."""


# --- configuration and plugins -------------------------------------------------------


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration: where it is and what was expected."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"


class ConfigError(BmsLoggerError):
    """The configuration is wrong. Carries every issue found, not only the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class PluginError(BmsLoggerError):
    """A plugin could not be loaded or breaks the hook contract."""


# --- talking to devices ---------------------------------------------------------------


class ProtocolError(BmsLoggerError):
    """Bytes from a device that do not form a valid answer. Raised only by codecs.

    `kind` names the counter the error is tallied under (``errors_<kind>`` in the
    ``bmslogger`` measurement).
    """

    kind = "protocol"

    def __init__(self, message: str, data: bytes = b"") -> None:
        self.data = bytes(data)
        super().__init__(message)


class ChecksumError(ProtocolError):
    """A frame arrived whole but its checksum or CRC does not match."""

    kind = "checksum"


class FramingError(ProtocolError):
    """Bytes that cannot be a frame: bad start marker, impossible length, truncation."""

    kind = "framing"


class UnexpectedAnswerError(ProtocolError):
    """A valid frame that does not answer the request in hand (stale, echo, wrong id)."""

    kind = "unexpected"


class DeviceReportedError(ProtocolError):
    """The device answered, with an error code instead of data."""

    kind = "device_error"


class TransportError(BmsLoggerError):
    """The line itself failed: port missing, unplugged, refused, or gone mid-read."""

    kind = "transport"


class PortUnavailableError(TransportError):
    """The port cannot be opened (missing device, USB adapter not plugged in, refused)."""

    kind = "port_unavailable"


class PortBusyError(TransportError):
    """Another process held the port lock for longer than the configured wait."""

    kind = "port_busy"

    def __init__(self, message: str, holder_pid: int | None = None) -> None:
        self.holder_pid = holder_pid
        super().__init__(message)


class NoAnswerError(BmsLoggerError):
    """The device stayed silent (or only sent garbage) until every retry's deadline."""

    kind = "timeout"


class WriteRefusedError(BmsLoggerError):
    """A command that changes a device was asked for while writes are not allowed,
    or with a value outside what the device accepts. Nothing was sent."""


# --- sinks ------------------------------------------------------------------------------


class SinkUnavailable(BmsLoggerError):
    """The sink cannot take data now (server down, network gone); try again later.

    `retry_after` is a hint in seconds from the server (HTTP Retry-After), or None.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class SinkError(BmsLoggerError):
    """This batch can never be written (the server rejects it); it goes to dead letters."""


class PointsRejected(SinkError):
    """The sink stored the batch except `rejected`: (point, reason) pairs the server
    refused and always will (a malformed point, a field type conflict). Only those go to
    the dead-letter file; the rest of the batch counts as written."""

    def __init__(self, rejected: list, message: str = "") -> None:
        self.rejected = list(rejected)
        first = self.rejected[0][1] if self.rejected else ""
        super().__init__(message or f"{len(self.rejected)} point(s) rejected: {first}")
