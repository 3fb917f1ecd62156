"""TenantStore on the real engine: bootstrap, tenants, keys, revocation, settings."""

from __future__ import annotations

import asyncio
import hashlib
from decimal import Decimal

import pytest

from schema.clickhouse import Database
from schema.models import (
    DEFAULT_TENANT,
    ModelPriceOverride,
    PrivacyPolicy,
    Role,
    TenantSettings,
)
from schema.tenants import (
    InvalidTenantName,
    KeyNotFound,
    LastAdminKey,
    TenantExists,
    TenantNotFound,
    TenantStore,
)

pytestmark = pytest.mark.clickhouse

ADMIN_KEY = "llmtel_test_admin_key_0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stored_key_rows(db: Database) -> list[tuple[object, ...]]:
    return db.query("SELECT * FROM {db}.api_keys")


async def test_bootstrap_generates_admin_and_default_keys_once(db: Database) -> None:
    store = TenantStore(db)
    new = store.bootstrap(None)
    assert set(new) == {"admin", "tenant default"}
    assert all(key.startswith("llmtel_") and len(key) > 40 for key in new.values())
    admin = await store.authenticate(new["admin"])
    assert admin is not None and admin.role is Role.ADMIN and admin.tenant_id == DEFAULT_TENANT
    tenant = await store.authenticate(new["tenant default"])
    assert tenant is not None and tenant.role is Role.TENANT
    assert tenant.tenant_id == DEFAULT_TENANT

    assert store.bootstrap(None) == {}
    assert TenantStore(db).bootstrap(None) == {}  # a restart
    assert [t.tenant_id for t in store.list_tenants()] == [DEFAULT_TENANT]
    assert len(stored_key_rows(db)) == 2


async def test_only_hashes_are_stored(db: Database) -> None:
    store = TenantStore(db)
    new = store.bootstrap(ADMIN_KEY)
    _, tenant_key = store.create_tenant("acme")
    plaintexts = [ADMIN_KEY, tenant_key, *new.values()]
    dump = repr(db.query("SELECT * FROM {db}.api_keys")) + repr(
        db.query("SELECT * FROM {db}.tenants")
    )
    for key in plaintexts:
        assert key not in dump
        assert hashlib.sha256(key.encode()).hexdigest() in dump


async def test_given_admin_key_is_installed_and_not_returned(db: Database) -> None:
    store = TenantStore(db)
    new = store.bootstrap(ADMIN_KEY)
    assert set(new) == {"tenant default"}  # the admin key is the operator's; not printed
    principal = await store.authenticate(ADMIN_KEY)
    assert principal is not None and principal.is_admin
    assert store.bootstrap(ADMIN_KEY) == {}
    admin_keys = [k for k in store.list_keys(DEFAULT_TENANT) if k.role is Role.ADMIN]
    assert len(admin_keys) == 1
    with pytest.raises(ValueError, match="at least|characters"):
        store.bootstrap("short")


async def test_tenant_names_are_validated_and_unique(db: Database) -> None:
    store = TenantStore(db)
    tenant, key = store.create_tenant("acme-corp_1")
    assert tenant.tenant_id == "acme-corp_1"
    for bad in ("", "Acme", "-acme", "acme corp", "a" * 64, "acme/x", "ac'me"):
        with pytest.raises(InvalidTenantName):
            store.create_tenant(bad)
    with pytest.raises(TenantExists):
        store.create_tenant("acme-corp_1")
    principal = await store.authenticate(key)
    assert principal is not None
    assert (principal.role, principal.tenant_id) == (Role.TENANT, "acme-corp_1")


async def test_unknown_keys_are_refused(db: Database) -> None:
    store = TenantStore(db)
    store.bootstrap(ADMIN_KEY)
    assert await store.authenticate("llmtel_nope") is None
    assert await store.authenticate("") is None
    assert await store.authenticate("x" * 10_000) is None


async def test_revocation_takes_effect_after_the_cache_ttl_in_other_processes(
    db: Database,
) -> None:
    clock = Clock()
    ingest_side = TenantStore(db, cache_ttl_s=2.0, clock=clock)  # e.g. an ingest process
    admin_side = TenantStore(db, cache_ttl_s=2.0, clock=clock)  # the API process
    _, key = admin_side.create_tenant("acme")
    assert await ingest_side.authenticate(key) is not None  # cached now
    (info,) = admin_side.list_keys("acme")
    revoked = admin_side.revoke_key(info.key_id)
    assert revoked.revoked
    assert await admin_side.authenticate(key) is None  # the revoking process: at once
    assert await ingest_side.authenticate(key) is not None  # still cached
    clock.now += 2.1
    assert await ingest_side.authenticate(key) is None
    assert admin_side.list_keys("acme")[0].revoked
    assert admin_side.revoke_key(info.key_id).revoked  # idempotent


async def test_revocation_in_real_time_with_a_short_ttl(db: Database) -> None:
    reader = TenantStore(db, cache_ttl_s=0.2)
    writer = TenantStore(db, cache_ttl_s=0.2)
    _, key = writer.create_tenant("acme")
    assert await reader.authenticate(key) is not None
    writer.revoke_key(writer.list_keys("acme")[0].key_id)
    await asyncio.sleep(0.25)
    assert await reader.authenticate(key) is None


async def test_negative_lookups_are_cached_too(db: Database) -> None:
    clock = Clock()
    store = TenantStore(db, cache_ttl_s=2.0, clock=clock)
    other = TenantStore(db, cache_ttl_s=2.0, clock=clock)
    assert await store.authenticate("llmtel_later") is None
    other.bootstrap("llmtel_later_installed_admin_key")
    assert await store.authenticate("llmtel_later_installed_admin_key") is not None
    clock.now += 2.1
    assert await store.authenticate("llmtel_later") is None


def test_keys_are_listed_without_secrets_and_the_last_admin_key_stays(db: Database) -> None:
    store = TenantStore(db)
    store.bootstrap(ADMIN_KEY)
    store.create_tenant("acme")
    info, key = store.create_key("acme")
    assert key.startswith("llmtel_")
    keys = store.list_keys("acme")
    assert [k.key_id for k in keys][-1] == info.key_id and len(keys) == 2
    assert not hasattr(keys[0], "key_hash")
    with pytest.raises(TenantNotFound):
        store.list_keys("nobody")
    with pytest.raises(TenantNotFound):
        store.create_key("nobody")
    with pytest.raises(KeyNotFound):
        store.revoke_key("key_missing")
    (admin,) = [k for k in store.list_keys(DEFAULT_TENANT) if k.role is Role.ADMIN]
    with pytest.raises(LastAdminKey):
        store.revoke_key(admin.key_id)


def test_settings_are_stored_cached_and_updated(db: Database) -> None:
    clock = Clock()
    store = TenantStore(db, clock=clock)
    elsewhere = TenantStore(db, clock=clock)
    assert store.get_settings("unknown") == TenantSettings()
    custom = TenantSettings(
        privacy=PrivacyPolicy.HASHED,
        price_overrides={
            "house": ModelPriceOverride(input_mtok=Decimal("1.25"), output_mtok=Decimal("5"))
        },
    )
    tenant, _ = store.create_tenant("acme", custom)
    assert tenant.settings == custom
    assert elsewhere.get_settings("acme") == custom
    assert store.get_tenant("acme").settings.price_overrides["house"].input_mtok == Decimal("1.25")
    updated = TenantSettings(privacy=PrivacyPolicy.OFF)
    store.update_settings("acme", updated)
    assert store.get_settings("acme") == updated  # the updating process: at once
    assert elsewhere.get_settings("acme") == custom  # cached
    clock.now += 2.1
    assert elsewhere.get_settings("acme") == updated
    assert store.get_tenant("acme").created_at == tenant.created_at
    assert [t.tenant_id for t in store.list_tenants()] == ["acme"]
    with pytest.raises(TenantNotFound):
        store.update_settings("nobody", updated)


def test_monthly_budgets_are_cached_and_refreshed(db: Database) -> None:
    clock = Clock()
    api = TenantStore(db, cache_ttl_s=2.0, clock=clock)
    other = TenantStore(db, cache_ttl_s=2.0, clock=clock)
    api.create_tenant("acme", TenantSettings(monthly_budget_usd=Decimal("10")))
    api.create_tenant("globex")
    assert api.monthly_budgets() == {"acme": Decimal("10")}
    # this process's own changes show at once
    api.update_settings("globex", TenantSettings(monthly_budget_usd=Decimal("2.5")))
    assert api.monthly_budgets() == {"acme": Decimal("10"), "globex": Decimal("2.5")}
    api.create_tenant("initech", TenantSettings(monthly_budget_usd=Decimal("1")))
    assert set(api.monthly_budgets()) == {"acme", "globex", "initech"}
    # another process's within the cache TTL
    other.update_settings("acme", TenantSettings())
    assert "acme" in api.monthly_budgets()
    clock.now += 2.1
    assert api.monthly_budgets() == {"globex": Decimal("2.5"), "initech": Decimal("1")}
    api.monthly_budgets().clear()  # a copy: the cache is not the caller's to change
    assert len(api.monthly_budgets()) == 2
