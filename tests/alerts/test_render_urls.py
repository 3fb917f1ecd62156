"""Slack Block Kit rendering, webhook signing, and the outbound URL policy."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from schema.alert_urls import UnsafeUrl, parse_prefixes, resolve_url
from schema.alerts import Alert, AlertKind, AlertMetric, AlertScope, mask_url
from streams.notify.render import (
    link,
    signature,
    slack_message,
    summary,
    webhook_body,
    webhook_headers,
)
from tests.alerts.helpers import T0, W
from tests.alerts.receiver import Received, check_slack, check_webhook

ALERT = Alert(
    alert_id="a" * 32, kind=AlertKind.FIRING, tenant="acme", rule_id="default",
    rule_name="cost anomaly", metric=AlertMetric.COST, scope=AlertScope.MODEL,
    key="gpt-4o <mini>", window_start_ns=T0, window_end_ns=T0 + W, value=Decimal("0.25"),
    average=Decimal("0.05"), factor=3.0, history=30,
)  # fmt: skip


def test_slack_message_has_block_kit_fields_link_and_fallback() -> None:
    message = slack_message(ALERT, "https://llmtel.example.com")
    request = Received("/", {"content-type": "application/json"}, _json(message), 0)
    fields = check_slack(request)
    assert fields["Tenant"] == "acme"
    assert fields["Scope"] == "model gpt-4o &lt;mini&gt;"  # mrkdwn escaped
    assert fields["Metric"] == "cost"
    assert fields["Value"] == "$0.25"
    assert fields["Rolling average"] == "$0.05"
    assert fields["Factor"].startswith("3x")
    assert fields["Window start"].startswith("2023-11-14 22:13:20.000")
    assert fields["Window end"].startswith("2023-11-14 22:13:21.000")
    assert "5.0x the rolling average $0.05" in message["text"]
    (button,) = next(b for b in message["blocks"] if b["type"] == "actions")["elements"]
    url = urlsplit(button["url"])
    assert (url.netloc, url.path) == ("llmtel.example.com", "/api/v1/windows")
    assert parse_qs(url.query) == {
        "tenant": ["acme"], "scope": ["model"], "key": ["gpt-4o <mini>"],
        "metric": ["cost_usd"], "start": [str(T0)], "end": [str(T0 + W)],
    }  # fmt: skip


def test_resolved_and_budget_summaries_say_what_happened() -> None:
    resolved = Alert(**{**_fields(ALERT), "kind": AlertKind.RESOLVED, "value": Decimal("0.04")})
    assert summary(resolved).startswith("[llmtel] resolved: acme (model gpt-4o <mini>) cost back")
    budget = Alert(
        alert_id="b" * 32, kind=AlertKind.BUDGET, tenant="acme", rule_id="budget",
        rule_name="80%", metric=AlertMetric.COST, scope=AlertScope.TENANT, key="",
        window_start_ns=T0, window_end_ns=T0 + W, value=Decimal("81.5"),
        threshold=Decimal(80), budget_usd=Decimal(100), budget_percent=80,
    )  # fmt: skip
    assert "reached 80% of the monthly budget $100.00" in summary(budget)
    assert urlsplit(link("http://x", budget)).path == "/api/v1/usage"
    fields = check_slack(Received("/", {"content-type": "application/json"},
                                  _json(slack_message(budget, "http://x")), 0))  # fmt: skip
    assert fields["Budget"] == "$100.00" and fields["Reached"] == "80%"


def test_webhook_signature_is_hmac_of_the_body_which_carries_the_timestamp() -> None:
    body = webhook_body(ALERT, "https://llmtel.example.com", 1_700_000_000)
    secret = "s3cret-s3cret-s3cret"
    sent = signature(secret, body)
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert sent == f"sha256={expected}"
    assert orjson.loads(body)["sent_at"] == 1_700_000_000  # signed with the body
    later = webhook_body(ALERT, "https://llmtel.example.com", 1_700_000_001)
    assert signature(secret, later) != sent
    assert signature("another-secret-value", body) != sent
    headers = webhook_headers(ALERT, secret, body, 1_700_000_000)
    assert headers["X-Llmtel-Timestamp"] == "1700000000" and headers["X-Llmtel-Signature"] == sent


def test_receiver_check_refuses_a_tampered_body_or_stale_timestamp() -> None:
    import time

    secret = "s3cret-s3cret-s3cret"
    now = int(time.time())
    body = webhook_body(ALERT, "https://x", now)
    headers = {"x-llmtel-timestamp": str(now), "x-llmtel-signature": signature(secret, body)}
    assert check_webhook(Received("/", headers, body, 0), secret)["alert"]["id"] == "a" * 32
    with pytest.raises(AssertionError, match="bad signature"):
        check_webhook(Received("/", headers, body.replace(b"acme", b"acmf"), 0), secret)
    old = now - 3600
    replayed = webhook_body(ALERT, "https://x", old)
    stale = {"x-llmtel-timestamp": str(old), "x-llmtel-signature": signature(secret, replayed)}
    with pytest.raises(AssertionError, match="stale"):
        check_webhook(Received("/", stale, replayed, 0), secret)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/x", "must use https"),
        ("ftp://example.com/x", "must be https"),
        ("https://user:pw@example.com/x", "credentials"),
        ("https://169.254.169.254/latest", "metadata"),
        ("https://169.254.10.1/x", "link-local"),
        ("https://[fe80::1]/x", "link-local"),
        ("https://[::ffff:169.254.169.254]/x", "metadata"),
        ("https://0.0.0.0/x", "unspecified"),
        ("http://127.0.0.1.example.com/x", "must use https"),
        ("https://does-not-exist.invalid/x", "does not resolve"),
    ],
)
def test_unsafe_destination_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl, match=reason):
        resolve_url(url, parse_prefixes("http://127.0.0.1, http://localhost"))


def test_the_resolved_address_is_judged_not_the_host_name() -> None:
    def evil(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "169.254.169.254"]

    with pytest.raises(UnsafeUrl, match="resolves to 169.254.169.254"):
        resolve_url("https://hooks.example.com/x", (), evil)


def test_allowed_urls_connect_to_the_checked_address() -> None:
    resolved = resolve_url("http://localhost:8080/hook?x=1", ["http://localhost"])
    assert resolved.address in ("127.0.0.1", "::1")
    assert resolved.pinned.endswith(":8080/hook?x=1") and "localhost" not in resolved.pinned
    assert resolve_url("https://93.184.216.34/x", ()).address == "93.184.216.34"


def test_masked_url_hides_the_path() -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
    assert mask_url(url) == "https://hooks.slack.com/***"


def _json(doc: object) -> bytes:
    import json

    return json.dumps(doc).encode()


def _fields(alert: Alert) -> dict[str, object]:
    return {name: getattr(alert, name) for name in Alert.__slots__}  # type: ignore[attr-defined]


def test_the_readme_verify_snippet_accepts_llmtel_webhooks_and_refuses_others() -> None:
    import time
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = readme.split("```python\n")[1:]
    snippet = next(block.split("```")[0] for block in blocks if "def verify(" in block)
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # noqa: S102 - our own README
    verify = namespace["verify"]
    secret = "s3cret-s3cret-s3cret"
    body = webhook_body(ALERT, "https://x", int(time.time()))
    sent = webhook_headers(ALERT, secret, body, int(time.time()))["X-Llmtel-Signature"]
    assert verify(secret, body, sent)
    assert not verify(secret, body.replace(b"acme", b"acmf"), sent)
    assert not verify("another-secret-value", body, sent)
    stale = webhook_body(ALERT, "https://x", int(time.time()) - 3600)
    assert not verify(secret, stale, signature(secret, stale))
