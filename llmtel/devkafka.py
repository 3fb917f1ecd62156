"""A real single-node Apache Kafka broker (KRaft) for tests and `llmtel dev kafka`.

No Docker: the broker's jars come from Maven Central through `deploy/kafka/pom.xml`
(`mvn dependency:copy-dependencies`, once, into a cache keyed by the pom's content), and the
broker runs as `java -cp '<libs>/*' kafka.Kafka server.properties` in combined broker +
controller mode on 127.0.0.1. Needs `java` (17+) and `mvn` on PATH (or JAVA_HOME / MVN).

    broker = KafkaBroker()
    broker.start()            # free ports, temporary data dir
    broker.bootstrap          # "127.0.0.1:PORT"
    broker.kill(); broker.restart()   # crash and come back on the same port and data
    broker.close()            # stop and remove a temporary data dir

Pure standard library: readiness is checked with a hand-encoded Metadata request, so this
module does not need a Kafka client library.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

POM_PATH = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "pom.xml"
HOST = "127.0.0.1"
NODE_ID = 1
DEFAULT_HEAP = "512m"
MVN_TIMEOUT_S = 900.0
FORMAT_TIMEOUT_S = 120.0
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0

_STAMP = ".complete"
_PORTS_FILE = "llmtel-ports.json"


class KafkaHarnessError(RuntimeError):
    """The dev broker could not be fetched, started or stopped; the message says why."""


# ---------------------------------------------------------------------------------------------
# jars


def kafka_version(pom: Path = POM_PATH) -> str:
    """The Kafka version the pom pins (its `kafka.version` property)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(pom).getroot().findtext("m:properties/m:kafka.version", namespaces=ns)
    if not version:
        raise KafkaHarnessError(f"{pom} has no <kafka.version> property")
    return version.strip()


def default_cache_dir(pom: Path = POM_PATH) -> Path:
    """$LLMTEL_KAFKA_CACHE, else ~/.cache/llmtel/kafka-<version> (honours XDG_CACHE_HOME)."""
    override = os.environ.get("LLMTEL_KAFKA_CACHE")
    if override:
        return Path(override).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llmtel" / f"kafka-{kafka_version(pom)}"


def _find_tool(name: str, env_var: str, home_var: str | None = None) -> str:
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    if home_var and os.environ.get(home_var):
        candidate = Path(os.environ[home_var]) / "bin" / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise KafkaHarnessError(
            f"`{name}` is not on PATH; the dev Kafka broker needs Java 17+ and Maven "
            f"(install them, or set {env_var})"
        )
    return found


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_kafka_jars(cache_dir: Path | None = None, pom: Path = POM_PATH) -> Path:
    """Return the directory holding the broker's jars, fetching them with Maven if needed.

    The first call runs `mvn dependency:copy-dependencies` (a minute or so on a cold ~/.m2);
    later calls only compare the pom's hash with the one stamped in the cache. Safe to call
    from several processes at once (file lock).
    """
    if not pom.exists():
        raise KafkaHarnessError(
            f"{pom} is missing; the dev Kafka broker runs from a source checkout of llmtel"
        )
    cache = cache_dir or default_cache_dir(pom)
    libs = cache / "libs"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    stamp = cache / _STAMP
    if stamp.exists() and stamp.read_text().strip() == digest:
        return libs
    with _file_lock(cache / ".lock"):
        if stamp.exists() and stamp.read_text().strip() == digest:
            return libs
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=cache))
        command = [
            _find_tool("mvn", "MVN"),
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=MVN_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise KafkaHarnessError(
                f"fetching the Kafka jars took over {MVN_TIMEOUT_S:.0f}s: {' '.join(command)}"
            ) from exc
        if result.returncode != 0 or not any(staging.glob("kafka_*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            tail = (result.stdout + result.stderr)[-3000:]
            raise KafkaHarnessError(
                f"fetching the Kafka jars failed (exit {result.returncode}); is Maven Central "
                f"reachable? command: {' '.join(command)}\n{tail}"
            )
        stamp.unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        stamp.write_text(digest + "\n")
    return libs


# ---------------------------------------------------------------------------------------------
# small helpers


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def new_cluster_id() -> str:
    """A random cluster id as Kafka writes one (`kafka-storage random-uuid`)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _kafka_string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        value = self.data[self.pos : self.pos + length].decode()
        self.pos += length
        return value


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def probe_metadata(host: str, port: int, timeout: float = 3.0) -> list[int]:
    """Send one Metadata request (v4, no topics) and return the node ids of live brokers.

    A KRaft broker lists itself only once it is registered with the controller and unfenced,
    so `NODE_ID in probe_metadata(...)` means clients can use it.
    """
    correlation_id = 7
    body = struct.pack(">i", 0) + struct.pack(">b", 0)  # topics: [], allow_auto_create: false
    header = struct.pack(">hhi", 3, 4, correlation_id) + _kafka_string("llmtel-devkafka")
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        reader = _Reader(_recv_exact(sock, size))
    if reader.take(">i") != correlation_id:
        raise ConnectionError("metadata response with a foreign correlation id")
    reader.take(">i")  # throttle_time_ms
    nodes = []
    for _ in range(reader.take(">i")):
        nodes.append(reader.take(">i"))
        reader.string()  # host
        reader.take(">i")  # port
        reader.string()  # rack
    return nodes


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace")


def _pdeathsig() -> Callable[[], None] | None:
    """On Linux, have the kernel SIGKILL the broker if the process that started it dies.

    The signal follows the *thread* that forked, so it is only armed from the main thread
    (whose end is the process's end); atexit covers ordinary exits everywhere else.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigkill = int(signal.SIGKILL)

    def arm() -> None:
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)

    return arm


# ---------------------------------------------------------------------------------------------
# the broker


_LIVE: set[KafkaBroker] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        brokers = list(_LIVE)
    for broker in brokers:
        with contextlib.suppress(Exception):
            broker.close()


atexit.register(_stop_all_at_exit)


class KafkaBroker:
    """One KRaft node (broker + controller) on 127.0.0.1, run from the cached Maven jars."""

    def __init__(
        self,
        *,
        libs: Path | None = None,
        heap: str = DEFAULT_HEAP,
        start_timeout: float = START_TIMEOUT_S,
        config: Mapping[str, str] | None = None,
    ) -> None:
        self._libs = libs
        self.heap = heap
        self.start_timeout = start_timeout
        self.extra_config = dict(config or {})
        self.port: int | None = None
        self.controller_port: int | None = None
        self.data_dir: Path | None = None
        self._owns_data_dir = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None

    # -- properties ----------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise KafkaHarnessError("the broker has not been started")
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The broker's own log (log4j); `stdout.log` beside it has the JVM's output."""
        if self.data_dir is None:
            raise KafkaHarnessError("the broker has not been started")
        return self.data_dir / "server.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, port: int | None = None, data_dir: Path | None = None) -> None:
        """Start the broker and return once it answers a Metadata request listing itself.

        `port` is the client listener (free port if None); `data_dir` keeps the config, the
        logs and the partitions (a temporary directory, removed by `close()`, if None). A data
        dir that was used before is reused with its cluster id, data and (if free) ports.
        """
        if self.is_running():
            raise KafkaHarnessError(f"the broker is already running at {self.bootstrap}")
        libs = self._libs or ensure_kafka_jars()
        if data_dir is None and self._owns_data_dir:
            data_dir = self.data_dir  # started before on a temporary dir: keep using it
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix="llmtel-kafka-"))
            self._owns_data_dir = True
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.port, self.controller_port = self._choose_ports(port)
        (data_dir / _PORTS_FILE).write_text(
            json.dumps({"port": self.port, "controller_port": self.controller_port})
        )
        self._write_config()
        if not (data_dir / "kraft" / "meta.properties").exists():
            self._format(libs)
        self._launch(libs)
        self._wait_ready()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after `timeout` seconds. Keeps the data."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._reap()

    def kill(self) -> None:
        """SIGKILL, as in a crash: no controlled shutdown, no flush. Keeps the data."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                raise KafkaHarnessError(f"broker pid {proc.pid} survived SIGKILL") from exc
        self._reap()

    def restart(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop if running, then start again on the same ports and data dir."""
        if self.data_dir is None or self.port is None:
            raise KafkaHarnessError("restart() needs a broker that was started before")
        self.stop(timeout)
        self._wait_ports_free(timeout)
        self.start(port=self.port, data_dir=self.data_dir)

    def close(self) -> None:
        """Stop, and remove the data dir if this broker created it."""
        self.stop()
        if self._owns_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._owns_data_dir = False

    def __enter__(self) -> KafkaBroker:
        if not self.is_running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _choose_ports(self, port: int | None) -> tuple[int, int]:
        assert self.data_dir is not None
        saved: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads((self.data_dir / _PORTS_FILE).read_text())
        if port is None:
            port = saved.get("port")
            if port is None or not _port_is_free(port):
                port = free_port()
        elif not _port_is_free(port):
            raise KafkaHarnessError(f"port {port} on {HOST} is taken; pick another or omit it")
        controller = saved.get("controller_port")
        if controller is None or controller == port or not _port_is_free(controller):
            controller = free_port()
            while controller == port:
                controller = free_port()
        return port, controller

    def _wait_ports_free(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ports = [p for p in (self.port, self.controller_port) if p is not None]
        while not all(_port_is_free(p) for p in ports):
            if time.monotonic() > deadline:
                raise KafkaHarnessError(f"ports {ports} are still taken after {timeout:.0f}s")
            time.sleep(0.1)

    def _write_config(self) -> None:
        assert self.data_dir is not None
        config = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "kraft"),
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # after a SIGKILL the restarted node waits for its old registration to expire
            "broker.session.timeout.ms": "2000",
            "broker.heartbeat.interval.ms": "500",
            "log.segment.bytes": str(16 * 1024 * 1024),
            "log.retention.hours": "24",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "delete.topic.enable": "true",
        }
        config.update(self.extra_config)
        lines = [f"{key}={value}" for key, value in config.items()]
        (self.data_dir / "server.properties").write_text("\n".join(lines) + "\n")
        log4j = [
            "log4j.rootLogger=INFO, file",
            "log4j.appender.file=org.apache.log4j.FileAppender",
            f"log4j.appender.file.File={self.data_dir / 'server.log'}",
            "log4j.appender.file.Append=true",
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
            "log4j.logger.org.apache.kafka=INFO",
            "log4j.logger.kafka=INFO",
            "log4j.logger.kafka.request.logger=WARN",
            "log4j.logger.state.change.logger=WARN",
        ]
        (self.data_dir / "log4j.properties").write_text("\n".join(log4j) + "\n")

    def _java_command(
        self, libs: Path, main_class: str, args: list[str], jvm: tuple[str, ...] = ()
    ) -> list[str]:
        assert self.data_dir is not None
        return [
            _find_tool("java", "JAVA", "JAVA_HOME"),
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            *jvm,
            f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            f"{libs}/*",
            main_class,
            *args,
        ]

    def _format(self, libs: Path) -> None:
        assert self.data_dir is not None
        command = self._java_command(
            libs,
            "kafka.tools.StorageTool",
            [
                "format",
                "--cluster-id",
                new_cluster_id(),
                "--config",
                str(self.data_dir / "server.properties"),
                "--ignore-formatted",
            ],
            jvm=("-XX:TieredStopAtLevel=1",),  # a short-lived JVM: start fast
        )
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaHarnessError(f"kafka-storage format took over {FORMAT_TIMEOUT_S}s") from exc
        if result.returncode != 0:
            raise KafkaHarnessError(
                f"kafka-storage format failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-3000:]}"
            )

    def _launch(self, libs: Path) -> None:
        assert self.data_dir is not None
        command = self._java_command(
            libs, "kafka.Kafka", [str(self.data_dir / "server.properties")]
        )
        self._stdout = (self.data_dir / "stdout.log").open("ab")
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not the JVM
            preexec_fn=_pdeathsig(),  # only prctl(2), see _pdeathsig
        )
        with _LIVE_LOCK:
            _LIVE.add(self)

    def _wait_ready(self) -> None:
        assert self._proc is not None and self.port is not None
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._reap()
                raise KafkaHarnessError(
                    f"the Kafka broker exited with {code} while starting; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}\n"
                    f"{_tail(self.log_path.with_name('stdout.log'), 2000)}"
                )
            try:
                if NODE_ID in probe_metadata(HOST, self.port, timeout=2.0):
                    return
            except (OSError, ConnectionError, struct.error) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                self.kill()
                raise KafkaHarnessError(
                    f"the Kafka broker did not become ready within {self.start_timeout:.0f}s "
                    f"({last_error}); log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def _reap(self) -> None:
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None
        with _LIVE_LOCK:
            _LIVE.discard(self)


# ---------------------------------------------------------------------------------------------
# `llmtel dev kafka`


def run_dev_kafka(port: int | None, data_dir: Path | None) -> int:
    """Run a broker in the foreground until Ctrl-C (or SIGTERM); 1 if it dies on its own."""
    broker = KafkaBroker()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        print(f"starting Kafka {kafka_version()} (KRaft, single node) ...", flush=True)
        started = time.monotonic()
        broker.start(port=port, data_dir=data_dir)
        print(
            f"Kafka is ready in {time.monotonic() - started:.1f}s\n"
            f"  bootstrap servers: {broker.bootstrap}\n"
            f"  data:              {broker.data_dir}"
            f"{' (temporary, removed on exit)' if data_dir is None else ''}\n"
            f"  broker log:        {broker.log_path}\n"
            "Ctrl-C to stop.",
            flush=True,
        )
        assert broker._proc is not None
        code = broker._proc.wait()
        print(f"llmtel: the Kafka broker exited on its own ({code}); see {broker.log_path}")
        return 1
    except KeyboardInterrupt:
        print("\nstopping Kafka ...", flush=True)
        return 0
    except KafkaHarnessError as exc:
        print(f"llmtel: {exc}", file=sys.stderr)
        return 1
    finally:
        broker.close()
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llmtel dev kafka", description="Run a single-node Kafka broker for development."
    )
    parser.add_argument("--port", type=int, help="client port (a free one if omitted)")
    parser.add_argument(
        "--data-dir", type=Path, help="keep data here across runs (temporary if omitted)"
    )
    args = parser.parse_args(argv)
    return run_dev_kafka(args.port, args.data_dir)


if __name__ == "__main__":
    sys.exit(main())
