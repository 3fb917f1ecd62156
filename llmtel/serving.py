"""Serving helpers shared by the embedded runner and the distributed roles."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import uvicorn

from llmtel import logs
from llmtel.settings import Settings


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to our runner (several share a loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def http_server(app: Callable[..., Any], host: str, port: int) -> QuietServer:
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=10,
    )  # fmt: skip
    return QuietServer(config)


GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """The hot path allocates many short-lived objects per span; the default GC thresholds
    make the cyclic collector run thousands of times a second over long-lived state."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_startup_heap() -> None:
    """Call once the apps are built. A full collection walks every tracked object, and the
    ~90k that building the API leaves (routes, pydantic schemas, price tables) made each one
    take ~70 ms: a pause inside whichever request it fell on. Frozen objects are never
    walked again (reference counting still frees them); startup's garbage is collected
    first, so none of it is kept for good."""
    gc.collect()
    gc.freeze()


def announce_keys(new_keys: dict[str, str]) -> None:
    """Print generated keys once; only their hashes are stored."""
    if not new_keys:
        return
    lines = ["", "llmtel generated these keys. They are shown ONCE; store them now:"]
    lines += [f"  {name:<16} {key}" for name, key in new_keys.items()]
    lines.append("")
    print("\n".join(lines), flush=True)


def run_until_signal(settings: Settings, serve: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Configure logging, run `serve(stop)` on uvloop; SIGINT/SIGTERM set `stop`."""
    logs.configure(settings.log_level, settings.log_format)
    tune_gc()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
    return 0
