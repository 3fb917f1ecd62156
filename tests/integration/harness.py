"""Run a real `llmtel up` process on free ports for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ADMIN_KEY = "llmtel_test_admin_key_0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LlmtelProcess:
    data_dir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def otlp_http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            LLMTEL_ADMIN_KEY=ADMIN_KEY,
            LLMTEL_API_URL=self.api_url,
            LLMTEL_LOG_FORMAT="json",
        )
        env.update(self.env_overrides)
        return env

    def start(self, *extra: str) -> None:
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmtel.cli",
                "up",
                "--data-dir",
                str(self.data_dir),
                "--host",
                "127.0.0.1",
                "--api-port",
                str(self.api_port),
                "--otlp-http-port",
                str(self.http_port),
                "--otlp-grpc-port",
                str(self.grpc_port),
                *extra,
            ],  # fmt: skip
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llmtel exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"llmtel did not become ready:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "llmtel.cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def create_tenant(self, name: str) -> str:
        done = self.cli("tenant", "create", name, "--json")
        assert done.returncode == 0, done.stderr
        created: dict[str, Any] = json.loads(done.stdout)
        assert created["tenant"] == name
        key: str = created["api_key"]
        return key

    def get(self, path: str, key: str = ADMIN_KEY, **params: Any) -> httpx.Response:
        return httpx.get(
            f"{self.api_url}{path}",
            params=params,
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )


@contextlib.contextmanager
def running(data_dir: Path, *extra: str, **env: str) -> Iterator[LlmtelProcess]:
    server = LlmtelProcess(data_dir, env_overrides=env)
    server.start(*extra)
    try:
        yield server
    finally:
        if server.proc is not None:
            server.stop()


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


@dataclass
class RoleProcess:
    """One distributed role (`llmtel ingest|sink|streams|api ...`) as a subprocess."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmtel.cli", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_http(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1).status_code < 500:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready:\n{self.log()}")

    def wait_log(self, text: str, timeout: float = 60) -> None:
        wait_for(lambda: text in self.log(), timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def role_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LLMTEL_ADMIN_KEY=ADMIN_KEY, LLMTEL_LOG_FORMAT="json")
    env.update(overrides)
    return env


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmtel.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
