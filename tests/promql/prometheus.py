"""A real Prometheus (Debian package `prometheus`) for tests: free port, generated config,
temporary storage, started and stopped by the test, never the system service."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from tests.integration.harness import free_port, wait_for

CONFIG = """\
global:
  scrape_interval: {interval}s
  scrape_timeout: {interval}s
scrape_configs:
  - job_name: llmtel
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials: {key}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
    metric_relabel_configs:
      - action: labeldrop
        regex: job|instance
"""


@dataclass
class Prometheus:
    url: str
    started_at: float  # unix seconds, before the first scrape

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()["data"]


@contextmanager
def serve_app(app: FastAPI) -> Iterator[str]:
    """`app` on a free local port in a thread of this process (which holds the chDB)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="llmtel-test-api", daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=15)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def run_prometheus(target: str, key: str, tmp: Path, interval_s: int) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make test` installs the Debian package prometheus"
    host, port = target.split(":")
    config = tmp / "prometheus.yml"
    config.write_text(CONFIG.format(interval=interval_s, key=key, port=port))
    listen = free_port()
    started_at = time.time()
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{listen}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prometheus = Prometheus(f"http://127.0.0.1:{listen}", started_at)
    try:

        def scraped() -> bool:
            try:
                result = prometheus.api("query", query="up{} == 1")["result"]
            except httpx.HTTPError:
                return False
            return bool(result)

        wait_for(scraped, timeout=30, interval=0.5)
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
