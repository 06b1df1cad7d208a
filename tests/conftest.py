"""Suite-wide rules.

Tests that need a real server (InfluxDB, MariaDB, Mosquitto, ...) are marked
``@pytest.mark.servers`` and skip with a reason on a machine without it. CI sets
``BMSLOGGER_REQUIRE_SERVERS=1``: there such a skip is turned into a failure, so a missing
install step can never pass as green.
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("BMSLOGGER_REQUIRE_SERVERS") == "1"
        and item.get_closest_marker("servers") is not None
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"BMSLOGGER_REQUIRE_SERVERS=1 but the test skipped: {reason}"


# --- real servers on loopback ---------------------------------------------------------------
# Each server runs as a private process on free 127.0.0.1 ports with its data in a temporary
# folder, can be stopped and started again on the same ports and data (outage tests), and is
# stopped at fixture teardown. A missing binary skips the test with the reason (a failure
# under BMSLOGGER_REQUIRE_SERVERS=1, see above).

import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _need(binary: str, package: str) -> str:
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.path.exists(p)), None
    )
    if path is None:
        pytest.skip(f"{binary} not installed (apt-get install {package}; see .ci/apt-packages)")
    return path


class ServerProcess:
    """One server process that can be stopped and started again on the same ports."""

    name = "server"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc: subprocess.Popen | None = None
        self.log_path = folder / f"{self.name}.log"

    def command(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def ready(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not come up: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _http_ok(url: str, statuses: tuple[int, ...] = (200, 204)) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status in statuses
    except (urllib.error.URLError, OSError):
        return False


class Influx1Server(ServerProcess):
    """Debian's influxd (InfluxDB 1.x): v1 /write and InfluxQL /query."""

    name = "influxd"

    def __init__(self, folder: Path, binary: str) -> None:
        super().__init__(folder)
        self.binary = binary
        self.port = free_port()
        self.rpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = folder / "influxdb.conf"
        d = folder
        self.config.write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{d}/meta"\n'
            f'[data]\n  dir = "{d}/data"\n  wal-dir = "{d}/wal"\n  query-log-enabled = false\n'
            f'[http]\n  enabled = true\n  bind-address = "127.0.0.1:{self.port}"\n'
            "  log-enabled = false\n"
            "[monitor]\n  store-enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
        )

    def command(self) -> list[str]:
        return [self.binary, "-config", str(self.config)]

    def ready(self) -> bool:
        return _http_ok(self.url + "/ping")

    def query(self, q: str, db: str = "") -> list[dict]:
        """InfluxQL; the ``series`` of the first result (epoch=ns)."""
        import json
        import urllib.parse

        params = urllib.parse.urlencode({"q": q, "db": db, "epoch": "ns"})
        req = urllib.request.Request(self.url + "/query", data=params.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            body = json.load(r)
        result = body["results"][0]
        if "error" in result:
            raise RuntimeError(result["error"])
        return result.get("series", [])

    def rows(self, db: str, measurement: str) -> list[dict]:
        """Every row of a measurement as {column: value}, ordered by time (tags included)."""
        q = f'SELECT * FROM "{measurement}"'
        out = []
        for series in self.query(q, db):
            for values in series["values"]:
                out.append(dict(zip(series["columns"], values)))
        return sorted(out, key=lambda r: r["time"])


class VictoriaMetricsServer(ServerProcess):
    """Debian's victoria-metrics: accepts InfluxDB's /api/v2/write (influxdb-client's path)."""

    name = "victoria-metrics"

    def __init__(self, folder: Path, binary: str) -> None:
        super().__init__(folder)
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            self.binary, f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.folder / 'data'}", "-retentionPeriod=100y",
            # a replayed point with the same series and time is stored once
            "-dedup.minScrapeInterval=1ms", "-search.disableCache",
            "-loggerLevel=ERROR",
        ]

    def ready(self) -> bool:
        return _http_ok(self.url + "/health")

    def export(self, match: str = '{__name__=~".+"}') -> list[dict]:
        """Every series as {"metric": {...}, "values": [...], "timestamps": [ms...]}."""
        import json
        import urllib.parse

        _http_ok(self.url + "/internal/force_flush")
        q = urllib.parse.urlencode({"match[]": match, "start": "0"})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{q}", timeout=30) as r:
            return [json.loads(line) for line in r.read().splitlines() if line.strip()]


class MariaDBServer(ServerProcess):
    """Debian's mariadbd, initialised in a temporary data folder, root without password."""

    name = "mariadbd"

    def __init__(self, folder: Path, binary: str, install_db: str) -> None:
        super().__init__(folder)
        self.binary = binary
        self.port = free_port()
        self.socket = str(folder / "mysqld.sock")
        self.datadir = folder / "data"
        subprocess.run(
            [install_db, "--no-defaults", f"--datadir={self.datadir}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=folder,
        )

    def command(self) -> list[str]:
        return [
            self.binary, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
            "--bind-address=127.0.0.1", f"--socket={self.socket}", "--user=root",
            f"--pid-file={self.folder / 'mysqld.pid'}", "--skip-log-bin",
            "--innodb-buffer-pool-size=128M", f"--log-error={self.log_path}",
        ]

    def ready(self) -> bool:
        try:
            self.connect().close()
            return True
        except Exception:
            return False

    def connect(self, database: str | None = None):
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="",
                               database=database, charset="utf8mb4", connect_timeout=2,
                               autocommit=True)

    def create_database(self, name: str) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            conn.close()


def _server(factory) -> Iterator:
    folder = Path(tempfile.mkdtemp(prefix="bmslogger-server-"))
    server = None
    try:
        server = factory(folder)
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def influx1_server() -> Iterator[Influx1Server]:
    """A private InfluxDB 1.x for the whole session."""
    binary = _need("influxd", "influxdb")
    yield from _server(lambda d: Influx1Server(d, binary))


@pytest.fixture(scope="session")
def victoria_server() -> Iterator[VictoriaMetricsServer]:
    """A private VictoriaMetrics (InfluxDB v2 write API) for the whole session."""
    binary = _need("victoria-metrics", "victoria-metrics")
    yield from _server(lambda d: VictoriaMetricsServer(d, binary))


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """A private MariaDB for the whole session."""
    binary = _need("mariadbd", "mariadb-server")
    install = _need("mariadb-install-db", "mariadb-server")
    yield from _server(lambda d: MariaDBServer(d, binary, install))


def _private(factory_fixture: str):
    """Function-scoped servers for tests that stop and start them (outages)."""

    @pytest.fixture
    def fixture(request) -> Iterator:
        if factory_fixture == "influx1":
            binary = _need("influxd", "influxdb")
            yield from _server(lambda d: Influx1Server(d, binary))
        elif factory_fixture == "victoria":
            binary = _need("victoria-metrics", "victoria-metrics")
            yield from _server(lambda d: VictoriaMetricsServer(d, binary))
        else:
            binary = _need("mariadbd", "mariadb-server")
            install = _need("mariadb-install-db", "mariadb-server")
            yield from _server(lambda d: MariaDBServer(d, binary, install))

    return fixture


private_influx1_server = _private("influx1")
private_victoria_server = _private("victoria")
private_mariadb_server = _private("mariadb")


class MosquittoServer(ServerProcess):
    """Debian's mosquitto on a free loopback port, anonymous, with persistence on, so
    queued QoS 1 messages of persistent sessions survive a restart (outage tests)."""

    name = "mosquitto"

    def __init__(self, folder: Path, binary: str) -> None:
        super().__init__(folder)
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        self.configure()

    def configure(self, listener: tuple[str, ...] = (), password_file: str = "") -> None:
        """Write the config (takes effect at the next start): extra `listener` lines
        such as ``certfile ...`` for TLS, and a password file that turns anonymous
        access off."""
        lines = [
            f"listener {self.port} 127.0.0.1",
            *listener,
            f"allow_anonymous {'false' if password_file else 'true'}",
            *([f"password_file {password_file}"] if password_file else []),
            "persistence true",
            f"persistence_location {self.folder}/",
            "autosave_interval 1",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to "mosquitto" and cannot persist
        self.config.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.config)]

    def ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False


@pytest.fixture
def mosquitto_server() -> Iterator[MosquittoServer]:
    """A private Mosquitto per test (tests stop and start it, and read retained topics)."""
    binary = _need("mosquitto", "mosquitto")
    yield from _server(lambda d: MosquittoServer(d, binary))


class HttpRecorder:
    """A real HTTP server on a free loopback port that records every request and answers
    with the statuses queued in `responses` (then 204); `stop`/`start` keep the port."""

    def __init__(self) -> None:
        import threading

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[dict] = []
        self.responses: list[tuple[int, dict]] = []
        #: the status for a request body once `responses` is empty (tests replace it)
        self.judge = lambda body: 204
        self.lock = threading.Lock()
        self._server = None
        self._thread = None

    def start(self, tls: tuple[str, str] | None = None) -> None:
        """Serve; with `tls` (certificate, key) over HTTPS, and `url` says https."""
        import http.server
        import threading

        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with recorder.lock:
                    status, headers = (recorder.responses.pop(0) if recorder.responses
                                       else (recorder.judge(body), {}))
                    if status < 300:
                        recorder.requests.append(
                            {"path": self.path, "headers": dict(self.headers), "body": body}
                        )
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if tls is not None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None


@pytest.fixture
def http_recorder() -> Iterator[HttpRecorder]:
    """A private recording HTTP server (see `HttpRecorder`), stopped at teardown."""
    server = HttpRecorder()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[str, str, str]:
    """A throw-away CA and a server certificate for 127.0.0.1, made by openssl:
    (ca.crt, server.crt, server.key) paths."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed (package openssl)")
    d = str(tmp_path)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, cwd=d, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=bmslogger test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n"
                                      "authorityKeyIdentifier=keyid,issuer\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return f"{d}/ca.crt", f"{d}/server.crt", f"{d}/server.key"
