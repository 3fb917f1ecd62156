"""The `llmtel` command: run the server, migrate, and manage tenants through the admin API.

Tenant commands talk to the running server over HTTP instead of opening the database
themselves: the embedded engine (chDB) allows only one process per data directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from llmtel import __version__


def _settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "data_dir", "clickhouse_url", "host", "api_port", "otlp_http_port",
        "otlp_grpc_port", "log_format", "log_level", "kafka_bootstrap", "auth_url",
    )  # fmt: skip
    overrides = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if getattr(args, "no_auth", False):
        overrides["no_auth"] = True
    return overrides


def _cmd_up(args: argparse.Namespace) -> int:
    from llmtel.embedded import run
    from llmtel.settings import Settings

    return run(Settings(**_settings_overrides(args)))


def _cmd_ingest(args: argparse.Namespace) -> int:
    from llmtel.roles import run_ingest
    from llmtel.settings import Settings

    return run_ingest(Settings(**_settings_overrides(args)))


def _cmd_sink(args: argparse.Namespace) -> int:
    from llmtel.roles import run_sink
    from llmtel.settings import Settings

    return run_sink(
        Settings(**_settings_overrides(args)), with_api=args.with_api, with_notify=args.with_notify
    )


def _cmd_notify(args: argparse.Namespace) -> int:
    from llmtel.notify import run_notify
    from llmtel.settings import Settings

    return run_notify(Settings(**_settings_overrides(args)))


def _cmd_streams(args: argparse.Namespace) -> int:
    from llmtel.roles import run_streams
    from llmtel.settings import Settings

    return run_streams(Settings(**_settings_overrides(args)))


def _cmd_api(args: argparse.Namespace) -> int:
    from llmtel.roles import run_api
    from llmtel.settings import Settings

    return run_api(Settings(**_settings_overrides(args)))


def _cmd_migrate(args: argparse.Namespace) -> int:
    from llmtel.settings import Settings
    from schema.clickhouse import Database
    from schema.migrate import migrate

    settings = Settings(**_settings_overrides(args))
    if settings.embedded_engine:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.connect(settings.clickhouse_url, settings.clickhouse_database)
    try:
        applied = migrate(db, settings.retention_days)
    finally:
        db.close()
    print("\n".join(applied) if applied else "schema is up to date")
    if args.kafka:
        import asyncio

        from schema.topics import ensure_topics

        created = asyncio.run(
            ensure_topics(
                settings.kafka_bootstrap,
                settings.kafka_topic_partitions,
                settings.kafka_replication_factor,
                max_request_bytes=settings.max_request_bytes,
            )
        )
        print("created topics: " + ", ".join(created) if created else "topics are up to date")
    return 0


class AdminClient:
    """The admin API as the CLI uses it; errors come back as one readable line."""

    def __init__(self, api_url: str, admin_key: str | None) -> None:
        if not admin_key:
            raise SystemExit("llmtel: set LLMTEL_ADMIN_KEY or pass --admin-key (the admin key)")
        self._http = httpx.Client(
            base_url=api_url.rstrip("/"),
            headers={"authorization": f"Bearer {admin_key}"},
            timeout=10,
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise SystemExit(
                f"llmtel: cannot reach the llmtel API at {self._http.base_url} ({exc}); "
                "is `llmtel up` running? (--api-url / LLMTEL_API_URL)"
            ) from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise SystemExit(f"llmtel: {method} {path} failed ({response.status_code}): {detail}")
        return response.json() if response.content else None


def _print(data: Any, as_json: bool, table: list[str] | None = None) -> None:
    if as_json or table is None:
        print(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    print("\t".join(table))
    for row in rows:
        print("\t".join(str(row.get(col, "")) for col in table))


def _cmd_tenant(args: argparse.Namespace) -> int:
    client = AdminClient(args.api_url, args.admin_key)
    if args.tenant_command == "create":
        created = client.call("POST", "/api/v1/tenants", {"name": args.name})
        if args.json:
            _print({"tenant": created["tenant"], "api_key": created["api_key"]}, True)
        else:
            print(f"tenant {created['tenant']} created; API key (shown once): {created['api_key']}")
    elif args.tenant_command == "list":
        _print(client.call("GET", "/api/v1/tenants"), args.json, ["tenant", "created_at"])
    elif args.tenant_command == "keys":
        keys = client.call("GET", f"/api/v1/tenants/{args.name}/keys")
        _print(keys, args.json, ["key_id", "created_at", "revoked"])
    elif args.tenant_command == "create-key":
        created = client.call("POST", f"/api/v1/tenants/{args.name}/keys")
        _print(created, True)
    elif args.tenant_command == "revoke-key":
        client.call("DELETE", f"/api/v1/keys/{args.key_id}")
        print(f"key {args.key_id} revoked; it stops working within seconds")
    return 0


def _cmd_dev_kafka(args: argparse.Namespace) -> int:
    from llmtel.devkafka import run_dev_kafka

    return run_dev_kafka(args.port, args.data_dir)


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="state directory (LLMTEL_DATA_DIR, ./data)")
    parser.add_argument("--clickhouse-url", help="chdb:///path or http(s)://host:8123/db")
    parser.add_argument("--log-format", choices=["json", "text"])
    parser.add_argument("--log-level")


def _listen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (0.0.0.0)")
    parser.add_argument("--api-port", type=int, help="API port (8000)")
    parser.add_argument("--otlp-http-port", type=int, help="OTLP/HTTP port (4318)")
    parser.add_argument("--otlp-grpc-port", type=int, help="OTLP/gRPC port (4317)")
    parser.add_argument("--no-auth", action="store_true", help="accept all data as tenant default")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmtel", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llmtel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run everything in one process (embedded mode)")
    _server_options(up)
    _listen_options(up)
    up.set_defaults(func=_cmd_up)

    mig = commands.add_parser("migrate", help="apply pending ClickHouse migrations")
    _server_options(mig)
    mig.add_argument("--kafka", action="store_true", help="also create the Kafka topics")
    mig.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers")
    mig.set_defaults(func=_cmd_migrate)

    ingest = commands.add_parser("ingest", help="distributed: OTLP receivers -> Kafka")
    _server_options(ingest)
    _listen_options(ingest)
    ingest.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers")
    ingest.add_argument("--auth-url", help="llmtel API that checks keys (else ClickHouse)")
    ingest.set_defaults(func=_cmd_ingest)

    sink = commands.add_parser("sink", help="distributed: Kafka -> ClickHouse")
    _server_options(sink)
    _listen_options(sink)
    sink.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers")
    sink.add_argument(
        "--with-api", action="store_true", help="also serve the API (needed with chdb://)"
    )
    sink.add_argument(
        "--with-notify",
        action="store_true",
        help="also run the alert notifier (needed with chdb://)",
    )
    sink.set_defaults(func=_cmd_sink)

    notify = commands.add_parser(
        "notify", help="distributed: alerts to Slack and webhooks (needs a ClickHouse server)"
    )
    _server_options(notify)
    notify.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers")
    notify.set_defaults(func=_cmd_notify)

    streams = commands.add_parser("streams", help="distributed: faust windows and anomalies")
    _server_options(streams)
    streams.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers")
    streams.set_defaults(func=_cmd_streams)

    api = commands.add_parser("api", help="distributed: the query and admin API")
    _server_options(api)
    _listen_options(api)
    api.set_defaults(func=_cmd_api)

    tenant = commands.add_parser("tenant", help="manage tenants on a running server")
    tenant.add_argument(
        "--api-url", default=os.environ.get("LLMTEL_API_URL", "http://localhost:8000")
    )
    tenant.add_argument("--admin-key", default=os.environ.get("LLMTEL_ADMIN_KEY"))
    tsub = tenant.add_subparsers(dest="tenant_command", required=True)
    create = tsub.add_parser("create", help="create a tenant and its first API key")
    create.add_argument("name")
    create.add_argument("--json", action="store_true")
    lst = tsub.add_parser("list", help="list tenants")
    lst.add_argument("--json", action="store_true")
    keys = tsub.add_parser("keys", help="list a tenant's keys (ids only)")
    keys.add_argument("name")
    keys.add_argument("--json", action="store_true")
    ck = tsub.add_parser("create-key", help="add an API key to a tenant")
    ck.add_argument("name")
    rk = tsub.add_parser("revoke-key", help="revoke an API key by its id")
    rk.add_argument("key_id")
    tenant.set_defaults(func=_cmd_tenant)

    dev = commands.add_parser("dev", help="development helpers")
    dsub = dev.add_subparsers(dest="dev_command", required=True)
    kafka = dsub.add_parser("kafka", help="run a single-node Kafka 3.9 (KRaft) fetched with Maven")
    kafka.add_argument("--port", type=int)
    kafka.add_argument("--data-dir", type=Path)
    kafka.set_defaults(func=_cmd_dev_kafka)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
