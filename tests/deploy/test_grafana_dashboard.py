"""The provisioned Grafana dashboard's SQL runs on llmtel's real schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schema.clickhouse import Database

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"


@pytest.mark.clickhouse
@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name)
def test_every_panel_query_runs(db: Database, path: Path) -> None:
    dashboard = json.loads(path.read_text())
    queries = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]
    assert queries
    for sql in queries:
        # Grafana's ClickHouse macros, as the datasource expands them
        runnable = (
            sql.replace("$__fromTime", "now() - INTERVAL 1 DAY")
            .replace("$__toTime", "now()")
            .replace("llmtel.", "{db}.")
        )
        db.query(runnable)
