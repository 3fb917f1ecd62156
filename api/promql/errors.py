"""Errors of the Prometheus HTTP API, answered in Prometheus' own error format."""

from __future__ import annotations


class PrometheusError(Exception):
    """`{"status": "error", "errorType": <error_type>, "error": <message>}`."""

    error_type = "internal"


class BadData(PrometheusError):
    """The query or a parameter is invalid, or uses a construct llmtel does not support."""

    error_type = "bad_data"


def unsupported(construct: str) -> BadData:
    return BadData(
        f"unsupported PromQL construct: {construct} "
        "(llmtel evaluates PromQL over its rollups; see docs/promql.md)"
    )


class ExecutionError(PrometheusError):
    """ClickHouse could not run the translated query."""

    error_type = "execution"


STATUS: dict[str, int] = {"bad_data": 400, "execution": 422, "internal": 500}
