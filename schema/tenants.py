"""Tenants, API keys and per-tenant settings, stored in ClickHouse.

Keys are `llmtel_` + 32 random bytes (url-safe base64); only their SHA-256 is stored, next
to a short public `key_id` that names the key in listings and revocations. Rows are
immutable: a change inserts a new row with a higher version into a ReplacingMergeTree, and
reads use FINAL.

`authenticate` is on the ingest hot path: lookups are cached for `cache_ttl_s`, positive
and negative alike, so a revoked key stops working within that time on every process, and
a flood of unknown keys does not become a flood of queries.

Tenant creation checks for duplicates under a process-local lock; two API processes
creating the same tenant at the same instant would both succeed (the later row wins, both
keys stay valid).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from schema.clickhouse import Database
from schema.models import DEFAULT_TENANT, Principal, Role, TenantSettings

KEY_PREFIX = "llmtel_"
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MIN_ADMIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 512  # longer bearer tokens are not ours; do not even hash them
_CACHE_MAX_ENTRIES = 10_000

K = TypeVar("K")
V = TypeVar("V")


class TenantError(Exception):
    """A tenant or key operation that cannot be done as asked."""


class InvalidTenantName(TenantError):
    pass


class TenantExists(TenantError):
    pass


class TenantNotFound(TenantError):
    pass


class KeyNotFound(TenantError):
    pass


class LastAdminKey(TenantError):
    pass


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    name: str
    settings: TenantSettings
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What may be shown about a key: never the key, never its hash."""

    key_id: str
    tenant_id: str
    role: Role
    created_at: datetime
    revoked: bool


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def validate_tenant_name(name: str) -> str:
    if not TENANT_NAME.fullmatch(name):
        raise InvalidTenantName(
            f"invalid tenant name {name!r}: use 1-63 characters a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _now() -> datetime:
    """Now, at the millisecond precision the tables keep."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _from_millis(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


class _TtlCache(Generic[K, V]):
    """A small thread-safe cache whose entries expire `ttl_s` seconds after being set."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> tuple[bool, V | None]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False, None
            if entry[0] <= self._clock():
                del self._entries[key]
                return False, None
            return True, entry[1]

    def put(self, key: K, value: V) -> None:
        now = self._clock()
        with self._lock:
            if len(self._entries) >= _CACHE_MAX_ENTRIES:
                self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
                if len(self._entries) >= _CACHE_MAX_ENTRIES:
                    self._entries.clear()
            self._entries[key] = (now + self._ttl_s, value)

    def discard(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)


class TenantStore:
    def __init__(
        self,
        db: Database,
        cache_ttl_s: float = 2.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._keys: _TtlCache[str, Principal | None] = _TtlCache(cache_ttl_s, clock)
        self._settings: _TtlCache[str, TenantSettings] = _TtlCache(cache_ttl_s, clock)
        self._budgets: _TtlCache[None, dict[str, Decimal]] = _TtlCache(cache_ttl_s, clock)
        self._write_lock = threading.Lock()
        self._last_version = 0

    # -- start-up ------------------------------------------------------------------------

    def bootstrap(self, admin_key: str | None = None) -> dict[str, str]:
        """Install the admin key and tenant `default` on first start.

        Returns the keys generated now, by name, to be shown once; {} on later starts. A
        given `admin_key` is installed if its hash is unknown (it is not returned: the
        caller knows it); a revoked one stays revoked. Without one, an admin key is
        generated only while no active admin key exists.
        """
        generated: dict[str, str] = {}
        with self._write_lock:
            if admin_key is not None:
                if len(admin_key) < MIN_ADMIN_KEY_LENGTH or len(admin_key) > MAX_KEY_LENGTH:
                    raise ValueError(
                        f"the admin key must be {MIN_ADMIN_KEY_LENGTH}-{MAX_KEY_LENGTH} "
                        "characters long"
                    )
                if not self._key_rows("key_hash = {h:String}", {"h": hash_key(admin_key)}):
                    # a known key is left alone, also when it was revoked
                    self._insert_key(admin_key, DEFAULT_TENANT, Role.ADMIN)
            elif not self._active_admin_keys():
                key = generate_key()
                self._insert_key(key, DEFAULT_TENANT, Role.ADMIN)
                generated["admin"] = key
            if self._tenant_row(DEFAULT_TENANT) is None:
                self._insert_tenant(DEFAULT_TENANT, TenantSettings())
                key = generate_key()
                self._insert_key(key, DEFAULT_TENANT, Role.TENANT)
                generated[f"tenant {DEFAULT_TENANT}"] = key
        return generated

    # -- tenants ---------------------------------------------------------------------------

    def create_tenant(
        self, name: str, settings: TenantSettings | None = None
    ) -> tuple[Tenant, str]:
        """A new tenant and its first API key (plaintext, shown once)."""
        validate_tenant_name(name)
        with self._write_lock:
            if self._tenant_row(name) is not None:
                raise TenantExists(f"tenant {name!r} already exists")
            tenant = self._insert_tenant(name, settings or TenantSettings())
            key = generate_key()
            self._insert_key(key, name, Role.TENANT)
        self._budgets.discard(None)
        return tenant, key

    def list_tenants(self) -> list[Tenant]:
        rows = self._db.query(
            "SELECT tenant_id, name, settings, toUnixTimestamp64Milli(created_at), deleted "
            "FROM {db}.tenants FINAL ORDER BY tenant_id"
        )
        return [self._tenant(row) for row in rows if not row[4]]

    def monthly_budgets(self) -> dict[str, Decimal]:
        """Every tenant's monthly budget, for those that have one; cached like settings
        (the dashboard overview and `/metrics` want it on every call)."""
        found, cached = self._budgets.get(None)
        if found and cached is not None:
            return dict(cached)
        budgets = {
            t.tenant_id: t.settings.monthly_budget_usd
            for t in self.list_tenants()
            if t.settings.monthly_budget_usd is not None
        }
        self._budgets.put(None, budgets)
        return dict(budgets)

    def get_tenant(self, tenant_id: str) -> Tenant:
        row = self._tenant_row(tenant_id)
        if row is None:
            raise TenantNotFound(f"tenant {tenant_id!r} does not exist")
        return self._tenant(row)

    def get_settings(self, tenant_id: str) -> TenantSettings:
        """The tenant's settings (defaults for an unknown tenant), cached for a short while."""
        found, cached = self._settings.get(tenant_id)
        if found and cached is not None:
            return cached
        row = self._tenant_row(tenant_id)
        settings = TenantSettings() if row is None else self._tenant(row).settings
        self._settings.put(tenant_id, settings)
        return settings

    def update_settings(self, tenant_id: str, settings: TenantSettings) -> Tenant:
        with self._write_lock:
            current = self.get_tenant(tenant_id)
            tenant = self._insert_tenant(tenant_id, settings, created_at=current.created_at)
        self._settings.discard(tenant_id)
        self._budgets.discard(None)
        return tenant

    # -- keys ----------------------------------------------------------------------------

    def create_key(self, tenant_id: str) -> tuple[ApiKeyInfo, str]:
        """A new tenant key for an existing tenant: its public info and the plaintext key."""
        with self._write_lock:
            self.get_tenant(tenant_id)
            key = generate_key()
            info = self._insert_key(key, tenant_id, Role.TENANT)
        return info, key

    def list_keys(self, tenant_id: str) -> list[ApiKeyInfo]:
        self.get_tenant(tenant_id)
        rows = self._key_rows("tenant_id = {t:String}", {"t": tenant_id})
        return [self._key_info(row) for row in rows]

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        """Revoke a key by its public id; other processes notice within `cache_ttl_s`."""
        with self._write_lock:
            rows = self._key_rows("key_id = {k:String}", {"k": key_id})
            if not rows:
                raise KeyNotFound(f"no API key with id {key_id!r}")
            row = rows[0]
            info = self._key_info(row)
            if info.revoked:
                return info
            if info.role is Role.ADMIN and len(self._active_admin_keys()) <= 1:
                raise LastAdminKey(
                    "refusing to revoke the last active admin key: create another one "
                    "first (set LLMTEL_ADMIN_KEY and restart)"
                )
            key_hash = str(row[5])
            self._db.insert_columns(
                "api_keys",
                [[key_hash], [info.key_id], [info.tenant_id], [info.role.value],
                 [info.created_at], [1], [self._next_version()]],
                ("key_hash", "key_id", "tenant_id", "role", "created_at", "revoked", "version"),
            )  # fmt: skip
        self._keys.discard(key_hash)
        return ApiKeyInfo(info.key_id, info.tenant_id, info.role, info.created_at, True)

    async def authenticate(self, api_key: str) -> Principal | None:
        """The key's principal, or None for an unknown or revoked key (ingest.ports)."""
        if not api_key or len(api_key) > MAX_KEY_LENGTH:
            return None
        key_hash = hash_key(api_key)
        found, principal = self._keys.get(key_hash)
        if found:
            return principal
        principal = await asyncio.to_thread(self._lookup, key_hash)
        self._keys.put(key_hash, principal)
        return principal

    # -- storage -------------------------------------------------------------------------

    def _lookup(self, key_hash: str) -> Principal | None:
        rows = self._key_rows("key_hash = {h:String}", {"h": key_hash})
        if not rows:
            return None
        info = self._key_info(rows[0])
        if info.revoked:
            return None
        return Principal(role=info.role, tenant_id=info.tenant_id, key_id=info.key_id)

    def _active_admin_keys(self) -> list[ApiKeyInfo]:
        # `revoked` is filtered here, after FINAL, never in WHERE (see _key_rows)
        keys = [self._key_info(row) for row in self._key_rows("role = 'admin'", {})]
        return [key for key in keys if not key.revoked]

    def _next_version(self) -> int:
        """Strictly increasing row versions, even within one nanosecond."""
        self._last_version = max(time.time_ns(), self._last_version + 1)
        return self._last_version

    def _tenant_row(self, tenant_id: str) -> tuple[Any, ...] | None:
        rows = self._db.query(
            "SELECT tenant_id, name, settings, toUnixTimestamp64Milli(created_at), deleted "
            "FROM {db}.tenants FINAL WHERE tenant_id = {t:String}",
            {"t": tenant_id},
        )
        # `deleted` is tested after FINAL picked the latest row, never in WHERE
        return rows[0] if rows and not rows[0][4] else None

    @staticmethod
    def _tenant(row: tuple[Any, ...]) -> Tenant:
        return Tenant(
            tenant_id=str(row[0]),
            name=str(row[1]),
            settings=TenantSettings.model_validate_json(row[2] or "{}"),
            created_at=_from_millis(row[3]),
        )

    def _insert_tenant(
        self, tenant_id: str, settings: TenantSettings, created_at: datetime | None = None
    ) -> Tenant:
        created = created_at or _now()
        self._db.insert_columns(
            "tenants",
            [[tenant_id], [tenant_id], [settings.model_dump_json()], [created], [0],
             [self._next_version()]],
            ("tenant_id", "name", "settings", "created_at", "deleted", "version"),
        )  # fmt: skip
        return Tenant(tenant_id, tenant_id, settings, created)

    def _key_rows(self, where: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Current key rows matching `where`; columns as `_key_info` reads.

        `where` may only test columns that never change for a key (hash, id, tenant, role):
        a condition on `revoked` could be evaluated before FINAL picks the latest row.
        """
        return self._db.query(
            "SELECT key_id, tenant_id, role, toUnixTimestamp64Milli(created_at), revoked, "
            f"key_hash FROM {{db}}.api_keys FINAL WHERE {where} ORDER BY created_at, key_id",
            parameters or None,
        )

    @staticmethod
    def _key_info(row: tuple[Any, ...]) -> ApiKeyInfo:
        return ApiKeyInfo(
            key_id=str(row[0]),
            tenant_id=str(row[1]),
            role=Role(row[2]),
            created_at=_from_millis(row[3]),
            revoked=bool(row[4]),
        )

    def _insert_key(self, api_key: str, tenant_id: str, role: Role) -> ApiKeyInfo:
        info = ApiKeyInfo(
            key_id="key_" + secrets.token_hex(8),
            tenant_id=tenant_id,
            role=role,
            created_at=_now(),
            revoked=False,
        )
        self._db.insert_columns(
            "api_keys",
            [[hash_key(api_key)], [info.key_id], [tenant_id], [role.value], [info.created_at],
             [0], [self._next_version()]],
            ("key_hash", "key_id", "tenant_id", "role", "created_at", "revoked", "version"),
        )  # fmt: skip
        self._keys.discard(hash_key(api_key))
        return info
