"""What a notification says: Slack Block Kit, the generic webhook body and its signature.

Webhook signature (documented in the README): with the destination's secret `s`, the
request carries

    X-Llmtel-Timestamp: <unix seconds when this attempt was sent>
    X-Llmtel-Signature: sha256=<hex HMAC-SHA256(s, raw body)>

The body carries the same timestamp (`sent_at`), so it is covered by the signature: a
receiver that checks the signature and refuses a `sent_at` older than a few minutes (or
one that differs from the header) cannot be fed a replayed request.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import orjson

from schema.alerts import Alert, AlertKind, AlertMetric, AlertScope

SIGNATURE_HEADER = "X-Llmtel-Signature"
TIMESTAMP_HEADER = "X-Llmtel-Timestamp"
ALERT_ID_HEADER = "X-Llmtel-Alert-Id"
NS_PER_S = 1_000_000_000

_METRIC_LABEL = {
    AlertMetric.COST: "cost",
    AlertMetric.TOKENS: "tokens",
    AlertMetric.REQUESTS: "requests",
    AlertMetric.ERRORS: "errors",
    AlertMetric.ERROR_RATE: "error rate",
    AlertMetric.LATENCY_P95: "p95 latency",
}
# the windows API's metric names (tokens: input tokens are the closest single figure)
_WINDOW_METRIC = {
    AlertMetric.COST: "cost_usd",
    AlertMetric.TOKENS: "input_tokens",
    AlertMetric.REQUESTS: "requests",
    AlertMetric.ERRORS: "errors",
    AlertMetric.ERROR_RATE: "error_rate",
    AlertMetric.LATENCY_P95: "latency_p95_ns",
}


def format_value(metric: AlertMetric, value: Decimal) -> str:
    if metric is AlertMetric.COST:
        text = f"{value.quantize(Decimal('0.000001')):f}".rstrip("0")
        whole, _, places = text.partition(".")
        return f"${whole}.{places.ljust(2, '0')}"
    if metric is AlertMetric.ERROR_RATE:
        return f"{value * 100:.1f}%"
    if metric is AlertMetric.LATENCY_P95:
        return f"{value:,.0f} ms"
    return f"{value:,.0f}"


def format_time(ns: int) -> str:
    moment = datetime.fromtimestamp(ns / NS_PER_S, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f".{ns % NS_PER_S // 1_000_000:03d} UTC"


def scope_text(alert: Alert) -> str:
    if alert.scope is AlertScope.TENANT:
        return "whole tenant"
    return f"{alert.scope.value} {alert.key or '(none)'}"


def link(base_url: str, alert: Alert) -> str:
    """The API view of the alert's window (budget: the month's usage)."""
    base = base_url.rstrip("/")
    if alert.kind is AlertKind.BUDGET:
        query = {"tenant": alert.tenant, "start": alert.window_start_ns, "end": alert.window_end_ns}
        return f"{base}/api/v1/usage?{urlencode(query)}"
    params: dict[str, Any] = {
        "tenant": alert.tenant,
        "scope": alert.scope.value,
        "metric": _WINDOW_METRIC[alert.metric],
        "start": alert.window_start_ns,
        "end": alert.window_end_ns,
    }
    if alert.scope is not AlertScope.TENANT:
        params["key"] = alert.key
    return f"{base}/api/v1/windows?{urlencode(params)}"


def summary(alert: Alert) -> str:
    """One line that says it all: Slack's `text` fallback and the webhook's `text`."""
    label = _METRIC_LABEL[alert.metric]
    value = format_value(alert.metric, alert.value)
    where = f"{alert.tenant} ({scope_text(alert)})"
    if alert.kind is AlertKind.BUDGET:
        assert alert.budget_usd is not None
        return (
            f"[llmtel] {alert.tenant}: month-to-date cost {value} reached "
            f"{alert.budget_percent}% of the monthly budget "
            f"{format_value(AlertMetric.COST, alert.budget_usd)}"
        )
    if alert.average is not None:
        average = format_value(alert.metric, alert.average)
        ratio = (
            f"{alert.value / alert.average:.1f}x the rolling average {average}"
            if alert.average > 0
            else f"rolling average {average}"
        )
        limit = f"{ratio} (rule {alert.rule_name or alert.rule_id}: above {alert.factor:g}x)"
    else:
        threshold = alert.threshold if alert.threshold is not None else Decimal(0)
        rule = alert.rule_name or alert.rule_id
        limit = f"above the threshold {format_value(alert.metric, threshold)} (rule {rule})"
    window = f"window {format_time(alert.window_start_ns)} - {format_time(alert.window_end_ns)}"
    if alert.kind is AlertKind.RESOLVED:
        return f"[llmtel] resolved: {where} {label} back to {value}, {limit}; {window}"
    return f"[llmtel] {where}: {label} {value} is {limit}; {window}"


def _escape(text: str) -> str:
    """Slack mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _title(alert: Alert) -> str:
    label = _METRIC_LABEL[alert.metric]
    if alert.kind is AlertKind.BUDGET:
        return f"Budget {alert.budget_percent}% reached: {alert.tenant}"[:150]
    if alert.kind is AlertKind.RESOLVED:
        return f"Resolved: {label} back to normal for {alert.tenant}"[:150]
    what = "anomaly" if alert.average is not None else "over threshold"
    return f"{label.capitalize()} {what}: {alert.tenant}"[:150]


def slack_message(alert: Alert, base_url: str) -> dict[str, Any]:
    """An incoming-webhook payload: Block Kit blocks plus the plain `text` fallback."""
    fields = [
        ("Tenant", alert.tenant),
        ("Scope", scope_text(alert)),
        ("Metric", _METRIC_LABEL[alert.metric]),
        ("Value", format_value(alert.metric, alert.value)),
    ]
    if alert.kind is AlertKind.BUDGET:
        assert alert.budget_usd is not None
        fields.append(("Budget", format_value(AlertMetric.COST, alert.budget_usd)))
        fields.append(("Reached", f"{alert.budget_percent}%"))
    elif alert.average is not None:
        fields.append(("Rolling average", format_value(alert.metric, alert.average)))
        fields.append(("Factor", f"{alert.factor:g}x (over {alert.history} windows)"))
    elif alert.threshold is not None:
        fields.append(("Threshold", format_value(alert.metric, alert.threshold)))
    fields.append(("Window start", format_time(alert.window_start_ns)))
    fields.append(("Window end", format_time(alert.window_end_ns)))
    url = link(base_url, alert)
    return {
        "text": summary(alert),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": _title(alert)}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{name}*\n{_escape(value)}"}
                    for name, value in fields
                ],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in llmtel"},
                        "url": url,
                    }
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": _escape(
                            f"rule {alert.rule_name or alert.rule_id} ({alert.rule_id}) · "
                            f"alert {alert.alert_id}"
                        ),
                    }
                ],
            },
        ],
    }


def webhook_body(alert: Alert, base_url: str, sent_at: int) -> bytes:
    """The JSON body of one attempt; `sent_at` (unix seconds) is what replay checks use."""
    document = alert.document()
    document.pop("destinations", None)
    return orjson.dumps(
        {
            "type": "llmtel.alert",
            "version": 1,
            "sent_at": sent_at,
            "alert": document,
            "text": summary(alert),
            "link": link(base_url, alert),
        }
    )


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, body)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_headers(alert: Alert, secret: str, body: bytes, sent_at: int) -> dict[str, str]:
    """Headers for a body made by `webhook_body(..., sent_at)`."""
    return {
        "content-type": "application/json",
        TIMESTAMP_HEADER: str(sent_at),
        SIGNATURE_HEADER: signature(secret, body),
        ALERT_ID_HEADER: alert.alert_id,
    }
