"""Alert rules, destinations, the notification ledger and delivery attempts in ClickHouse.

Rules and destinations follow the tenants table's pattern: immutable rows, a higher
`Version` wins, `Deleted` is tested after FINAL. The notifier reads them through short
caches (`rules_for`, `destinations_for`), so a change reaches it within `cache_ttl_s`.

The ledger (`alert_notifications`) is how a notification is sent once per (alert,
destination) across redelivered windows, duplicated anomaly messages and restarts:
`claim` writes a `sending` row before the first request and skips pairs that already have
one. Within one process a lock makes check-and-claim atomic; across processes the Kafka
partitioning (one notifier owns a tenant at a time) does, except for the moments of a
rebalance, when two members may both claim the same alert.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from schema.alerts import (
    DEFAULT_RULE,
    DEFAULT_RULE_ID,
    Alert,
    AlertRule,
    DeliveryAttempt,
    Destination,
    DestinationKind,
    DestinationNotFound,
    DestinationSpec,
    InvalidAlertConfig,
    RuleNotFound,
    RulePatch,
    RuleSpec,
)
from schema.clickhouse import Database
from schema.windows import Scope, WindowRecord

_RULE_COLUMNS = ("TenantId", "RuleId", "Spec", "CreatedAt", "Deleted", "Version")
_DEST_COLUMNS = (
    "TenantId", "DestinationId", "Name", "Kind", "Url", "Secret", "IsDefault", "CreatedAt",
    "Deleted", "Version",
)  # fmt: skip
_LEDGER_COLUMNS = (
    "TenantId", "AlertId", "DestinationId", "RuleId", "Kind", "WindowStart", "Payload",
    "Status", "ClaimedAt", "Version",
)  # fmt: skip
_ATTEMPT_COLUMNS = (
    "TenantId", "AlertId", "RuleId", "DestinationId", "Kind", "WindowStart", "WindowEnd",
    "Attempt", "Status", "HttpStatus", "LatencyMs", "Error", "AttemptedAt",
)  # fmt: skip

SENDING = "sending"
MAX_ERROR_CHARS = 1000


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _from_millis(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


class AlertStore:
    def __init__(
        self, db: Database, cache_ttl_s: float = 2.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = db
        self._ttl = cache_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_version = 0
        self._rules_cache: dict[str, tuple[float, list[AlertRule]]] = {}
        self._dest_cache: dict[str, tuple[float, list[Destination]]] = {}

    def _version(self) -> int:
        self._last_version = max(time.time_ns(), self._last_version + 1)
        return self._last_version

    # -- rules -----------------------------------------------------------------------------

    def create_rule(self, tenant: str, spec: RuleSpec) -> AlertRule:
        self._check_destinations(tenant, spec)
        rule = AlertRule(tenant, "rule_" + secrets.token_hex(8), spec, _now())
        self._write_rule(rule)
        return rule

    def list_rules(self, tenant: str | None) -> list[AlertRule]:
        """The tenant's rules (every tenant's with None), the default rule included."""
        where, params = ("TenantId = {t:String}", {"t": tenant}) if tenant else ("1", {})
        rows = self._db.query(
            "SELECT TenantId, RuleId, Spec, toUnixTimestamp64Milli(CreatedAt), Deleted "
            f"FROM {{db}}.alert_rules FINAL WHERE {where} ORDER BY TenantId, CreatedAt, RuleId",
            params or None,
        )
        stored = [(str(r[0]), str(r[1]), r) for r in rows]
        tenants = [tenant] if tenant else self._tenant_ids()
        overridden = {(t, rid) for t, rid, _ in stored}
        rules = [
            AlertRule(t, DEFAULT_RULE_ID, DEFAULT_RULE, None)
            for t in tenants
            if (t, DEFAULT_RULE_ID) not in overridden
        ]
        rules += [
            AlertRule(t, rid, RuleSpec.model_validate_json(r[2]), _from_millis(r[3]))
            for t, rid, r in stored
            if not r[4]
        ]
        rules.sort(key=lambda rule: (rule.tenant, rule.rule_id != DEFAULT_RULE_ID))
        return rules

    def get_rule(self, tenant: str, rule_id: str) -> AlertRule:
        for rule in self.list_rules(tenant):
            if rule.rule_id == rule_id:
                return rule
        raise RuleNotFound(f"tenant {tenant!r} has no alert rule {rule_id!r}")

    def update_rule(self, tenant: str, rule_id: str, patch: RulePatch) -> AlertRule:
        with self._lock:
            current = self.get_rule(tenant, rule_id)
            try:
                spec = patch.apply(current.spec)
            except ValueError as exc:
                raise InvalidAlertConfig(str(exc)) from None
            self._check_destinations(tenant, spec)
            rule = AlertRule(tenant, rule_id, spec, current.created_at or _now())
            self._write_rule(rule)
        return rule

    def delete_rule(self, tenant: str, rule_id: str) -> None:
        with self._lock:
            current = self.get_rule(tenant, rule_id)
            self._write_rule(current, deleted=True)

    def rules_for(self, tenant: str) -> list[AlertRule]:
        """The tenant's rules through a short cache (the notifier's per-window lookup)."""
        now = self._clock()
        cached = self._rules_cache.get(tenant)
        if cached is not None and cached[0] > now:
            return cached[1]
        rules = self.list_rules(tenant)
        self._rules_cache[tenant] = (now + self._ttl, rules)
        return rules

    def _write_rule(self, rule: AlertRule, deleted: bool = False) -> None:
        self._db.insert_columns(
            "alert_rules",
            [[rule.tenant], [rule.rule_id], [rule.spec.model_dump_json()],
             [rule.created_at or _now()], [int(deleted)], [self._version()]],
            _RULE_COLUMNS,
        )  # fmt: skip
        self._rules_cache.pop(rule.tenant, None)

    def _check_destinations(self, tenant: str, spec: RuleSpec) -> None:
        known = {d.destination_id for d in self.list_destinations(tenant)}
        unknown = [d for d in spec.destinations if d not in known]
        if unknown:
            raise InvalidAlertConfig(
                f"unknown destinations {unknown}: create them with "
                "POST /api/v1/alerts/destinations first"
            )

    def _tenant_ids(self) -> list[str]:
        rows = self._db.query(
            "SELECT tenant_id, deleted FROM {db}.tenants FINAL ORDER BY tenant_id"
        )
        return [str(r[0]) for r in rows if not r[1]]

    # -- destinations ------------------------------------------------------------------------

    def create_destination(self, tenant: str, spec: DestinationSpec) -> Destination:
        destination = Destination(
            tenant=tenant,
            destination_id="dest_" + secrets.token_hex(8),
            name=spec.name,
            kind=spec.kind,
            url=spec.url,
            secret=spec.secret or "",
            default=spec.default,
            created_at=_now(),
        )
        self._write_destination(destination)
        return destination

    def list_destinations(self, tenant: str | None) -> list[Destination]:
        where, params = ("TenantId = {t:String}", {"t": tenant}) if tenant else ("1", {})
        rows = self._db.query(
            "SELECT TenantId, DestinationId, Name, Kind, Url, Secret, IsDefault, "
            "toUnixTimestamp64Milli(CreatedAt), Deleted FROM {db}.alert_destinations FINAL "
            f"WHERE {where} ORDER BY TenantId, CreatedAt, DestinationId",
            params or None,
        )
        return [
            Destination(
                tenant=str(r[0]),
                destination_id=str(r[1]),
                name=str(r[2]),
                kind=DestinationKind(r[3]),
                url=str(r[4]),
                secret=str(r[5]),
                default=bool(r[6]),
                created_at=_from_millis(r[7]),
            )
            for r in rows
            if not r[8]
        ]

    def get_destination(self, tenant: str, destination_id: str) -> Destination:
        for destination in self.list_destinations(tenant):
            if destination.destination_id == destination_id:
                return destination
        raise DestinationNotFound(f"tenant {tenant!r} has no destination {destination_id!r}")

    def delete_destination(self, tenant: str, destination_id: str) -> None:
        with self._lock:
            current = self.get_destination(tenant, destination_id)
            self._write_destination(current, deleted=True)

    def destinations_for(self, tenant: str) -> list[Destination]:
        now = self._clock()
        cached = self._dest_cache.get(tenant)
        if cached is not None and cached[0] > now:
            return cached[1]
        destinations = self.list_destinations(tenant)
        self._dest_cache[tenant] = (now + self._ttl, destinations)
        return destinations

    def _write_destination(self, d: Destination, deleted: bool = False) -> None:
        self._db.insert_columns(
            "alert_destinations",
            [[d.tenant], [d.destination_id], [d.name], [d.kind.value], [d.url], [d.secret],
             [int(d.default)], [d.created_at], [int(deleted)], [self._version()]],
            _DEST_COLUMNS,
        )  # fmt: skip
        self._dest_cache.pop(d.tenant, None)

    # -- the notification ledger -------------------------------------------------------------

    def claim(self, alert: Alert, destination_ids: Sequence[str]) -> list[str]:
        """Record `sending` for the (alert, destination) pairs not claimed before; return
        the destinations claimed now (the ones to send to)."""
        if not destination_ids:
            return []
        with self._lock:
            rows = self._db.query(
                "SELECT DestinationId FROM {db}.alert_notifications FINAL "
                "WHERE TenantId = {t:String} AND AlertId = {a:String}",
                {"t": alert.tenant, "a": alert.alert_id},
            )
            seen = {str(r[0]) for r in rows}
            fresh = [d for d in destination_ids if d not in seen]
            if fresh:
                self._write_ledger(alert, fresh, SENDING)
        return fresh

    def finish(self, alert: Alert, destination_id: str, status: str) -> None:
        """Close a claim: `delivered`, `failed` or `superseded`."""
        self._write_ledger(alert, [destination_id], status)

    def supersede(self, alert: Alert, destination_ids: Sequence[str]) -> None:
        """Mark pairs as settled without sending (e.g. a lower budget level)."""
        if destination_ids:
            with self._lock:
                self._write_ledger(alert, list(destination_ids), "superseded")

    def orphaned_claims(self, older_than_s: float) -> list[tuple[Alert, str]]:
        """Claims still `sending` after `older_than_s`: their sender died mid-delivery."""
        rows = self._db.query(
            "SELECT Payload, DestinationId, Status, toUnixTimestamp64Milli(ClaimedAt) "
            "FROM {db}.alert_notifications FINAL "
            "WHERE ClaimedAt < now64(3) - toIntervalMillisecond({ms:UInt64})",
            {"ms": int(older_than_s * 1000)},
        )
        return [(Alert.from_json(r[0]), str(r[1])) for r in rows if r[2] == SENDING]

    def ledger(self, tenant: str) -> list[tuple[str, str, str]]:
        """(alert id, destination id, status) of the tenant's notifications."""
        rows = self._db.query(
            "SELECT AlertId, DestinationId, Status FROM {db}.alert_notifications FINAL "
            "WHERE TenantId = {t:String} ORDER BY AlertId, DestinationId",
            {"t": tenant},
        )
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def _write_ledger(self, alert: Alert, destination_ids: list[str], status: str) -> None:
        n = len(destination_ids)
        now = _now()
        self._db.insert_columns(
            "alert_notifications",
            [[alert.tenant] * n, [alert.alert_id] * n, destination_ids, [alert.rule_id] * n,
             [alert.kind.value] * n, [alert.window_start_ns] * n,
             [alert.to_json().decode()] * n, [status] * n, [now] * n,
             [self._version() for _ in range(n)]],
            _LEDGER_COLUMNS,
        )  # fmt: skip

    # -- delivery attempts -------------------------------------------------------------------

    def record_attempt(self, a: DeliveryAttempt) -> None:
        self._db.insert_columns(
            "alert_deliveries",
            [[a.tenant], [a.alert_id], [a.rule_id], [a.destination_id], [a.kind.value],
             [a.window_start_ns], [a.window_end_ns], [a.attempt], [a.status.value],
             [a.http_status], [a.latency_ms], [a.error[:MAX_ERROR_CHARS]], [a.attempted_at]],
            _ATTEMPT_COLUMNS,
        )  # fmt: skip

    def list_deliveries(
        self,
        tenant: str | None,
        start_ns: int,
        end_ns: int,
        *,
        rule_id: str | None = None,
        destination_id: str | None = None,
        alert_id: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Attempts made in [start_ns, end_ns), newest first."""
        where = [
            "AttemptedAt >= fromUnixTimestamp64Nano({start:Int64})",
            "AttemptedAt < fromUnixTimestamp64Nano({end:Int64})",
        ]
        params: dict[str, Any] = {"start": start_ns, "end": end_ns, "limit": limit}
        for column, name, value in (
            ("TenantId", "tenant", tenant),
            ("RuleId", "rule", rule_id),
            ("DestinationId", "destination", destination_id),
            ("AlertId", "alert", alert_id),
        ):
            if value is not None:
                where.append(f"{column} = {{{name}:String}}")
                params[name] = value
        return self._db.query_dicts(
            "SELECT TenantId AS tenant, AlertId AS alert_id, RuleId AS rule_id, "
            "DestinationId AS destination_id, Kind AS kind, "
            "toUnixTimestamp64Nano(WindowStart) AS window_start_unix_nano, "
            "toUnixTimestamp64Nano(WindowEnd) AS window_end_unix_nano, Attempt AS attempt, "
            "Status AS status, HttpStatus AS http_status, LatencyMs AS latency_ms, "
            "Error AS error, toUnixTimestamp64Milli(AttemptedAt) AS attempted_at_ms "
            f"FROM {{db}}.alert_deliveries WHERE {' AND '.join(where)} "
            "ORDER BY AttemptedAt DESC, AlertId, Attempt DESC LIMIT {limit:UInt32}",
            params,
        )

    # -- budgets -----------------------------------------------------------------------------

    def month_to_date_cost(self, tenant: str, month_start_ns: int, until_ns: int) -> Decimal:
        """Exact priced cost of the tenant's LLM calls from `month_start_ns` to `until_ns`,
        from the per-minute rollup."""
        rows = self._db.query(
            "SELECT sum(CostUsd) FROM {db}.llm_rollup_1m WHERE TenantId = {t:String} "
            "AND Minute >= toDateTime(intDiv({start:Int64}, 1000000000), 'UTC') "
            "AND Minute < toDateTime(intDiv({end:Int64}, 1000000000), 'UTC')",
            {"t": tenant, "start": month_start_ns, "end": until_ns},
        )
        return Decimal(rows[0][0]) if rows and rows[0][0] is not None else Decimal(0)

    # -- history for a restarted embedded notifier --------------------------------------------

    def recent_windows(self, since_ns: int) -> list[WindowRecord]:
        """Stored windows (`tenant_windows`) that started at or after `since_ns`, oldest first."""
        rows = self._db.query(
            "SELECT TenantId, Scope, ScopeKey, toUnixTimestamp64Nano(WindowStart), "
            "toUnixTimestamp64Nano(WindowEnd), Requests, Errors, InputTokens, OutputTokens, "
            "CostUsd, Unpriced, LatencyP95Ns FROM {db}.tenant_windows FINAL "
            "WHERE WindowStart >= fromUnixTimestamp64Nano({since:Int64}) "
            "ORDER BY WindowStart, TenantId, Scope DESC, ScopeKey",
            {"since": since_ns},
        )
        return [
            WindowRecord(
                tenant=str(r[0]),
                scope=Scope(r[1]),
                key=str(r[2]),
                window_start_ns=int(r[3]),
                window_end_ns=int(r[4]),
                requests=int(r[5]),
                errors=int(r[6]),
                input_tokens=int(r[7]),
                output_tokens=int(r[8]),
                cost_usd=Decimal(r[9]),
                unpriced=int(r[10]),
                latency_p95_ns=int(r[11]),
            )  # fmt: skip
            for r in rows
        ]
