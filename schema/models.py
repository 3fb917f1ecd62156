"""Tenants, keys and per-tenant settings: the records every component agrees on."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_TENANT = "default"


class PrivacyPolicy(StrEnum):
    """How prompt and completion content is stored."""

    FULL = "full"
    REDACTED = "redacted"
    HASHED = "hashed"
    OFF = "off"


class ModelPriceOverride(BaseModel):
    """A tenant's own price for a model, USD per million tokens.

    Unset kinds fall back: cache reads to the input price, reasoning to the output price.
    """

    model_config = ConfigDict(frozen=True)

    input_mtok: Decimal
    output_mtok: Decimal
    cache_read_mtok: Decimal | None = None
    reasoning_mtok: Decimal | None = None


class TenantSettings(BaseModel):
    """Per-tenant behaviour; stored as JSON next to the tenant."""

    model_config = ConfigDict(frozen=True)

    privacy: PrivacyPolicy = PrivacyPolicy.REDACTED
    # keyed by model name as it appears on spans (response model, else request model)
    price_overrides: dict[str, ModelPriceOverride] = Field(default_factory=dict)
    # month-to-date spend limit in USD (calendar month, UTC); None = no budget
    monthly_budget_usd: Decimal | None = Field(default=None, gt=0)


class Role(StrEnum):
    ADMIN = "admin"
    TENANT = "tenant"


class Principal(BaseModel):
    """Who a presented API key belongs to."""

    model_config = ConfigDict(frozen=True)

    role: Role
    tenant_id: str  # the key's own tenant; for the admin key, DEFAULT_TENANT
    key_id: str

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN
