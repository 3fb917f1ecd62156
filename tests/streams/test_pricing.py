"""The fast pricer must equal genai-prices exactly (after quantizing to 12 places)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices import Usage

from schema.models import ModelPriceOverride
from streams.pricing import (
    SOURCE_ATTRIBUTE,
    SOURCE_GENAI_PRICES,
    SOURCE_NONE,
    SOURCE_OVERRIDE,
    Pricer,
    linear_form,
    ns_to_datetime,
    parse_cost,
    price_provider_id,
    quantize_usd,
    usd_to_e12,
)

QUANTUM = Decimal("1e-12")
WIDE = Context(prec=60)
NOW_NS = 1_760_000_000 * 10**9  # 2025-10-09T08:53:20Z


def reference(
    provider: str | None,
    model: str,
    inp: int,
    out: int,
    cache_read: int = 0,
    reasoning: int = 0,
    timestamp_ns: int = NOW_NS,
    cache_write: int = 0,
) -> Decimal | None:
    """genai-prices' own answer, quantized like the ClickHouse column."""
    usage = Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_reasoning_tokens=reasoning,
    )
    try:
        calc = genai_prices.calc_price(
            usage,
            model_ref=model,
            provider_id=provider,
            genai_request_timestamp=ns_to_datetime(timestamp_ns),
        )
    except (LookupError, ValueError):
        return None
    return calc.total_price.quantize(QUANTUM, rounding=ROUND_HALF_EVEN, context=WIDE)


# (span provider, genai-prices provider id, model)
MODELS = [
    ("openai", "openai", "gpt-4o"),
    ("openai", "openai", "gpt-4o-mini"),
    ("openai", "openai", "o3-mini"),
    ("anthropic", "anthropic", "claude-3-5-sonnet-latest"),
    ("anthropic", "anthropic", "claude-3-5-haiku-latest"),
    ("anthropic", "anthropic", "claude-sonnet-4-5"),  # tiered above 200k input tokens
    ("gcp.gemini", "google", "gemini-1.5-pro"),  # tiered above 128k
    ("gcp.vertex_ai", "google", "gemini-2.5-pro"),  # tiered above 200k
    ("perplexity", "perplexity", "sonar"),  # per-request fee
    ("perplexity", "perplexity", "sonar-deep-research"),  # reasoning tokens priced
]


def random_usages(rng: random.Random, count: int) -> list[tuple[int, int, int, int]]:
    usages = []
    for _ in range(count):
        inp = rng.choice(
            [
                rng.randint(0, 2_000),
                rng.randint(0, 300_000),
                rng.choice([127_999, 128_000, 128_001, 199_999, 200_000, 200_001]),
                rng.randint(0, 10**9),
            ]
        )
        cache_read = rng.choice([0, rng.randint(0, inp)])
        out = rng.choice([0, rng.randint(0, 5_000), rng.randint(0, 10**7)])
        reasoning = rng.choice([0, rng.randint(0, out)])
        usages.append((inp, out, cache_read, reasoning))
    return usages


@pytest.mark.parametrize(("span_provider", "provider_id", "model"), MODELS)
def test_fast_path_equals_genai_prices_on_random_usages(
    span_provider: str, provider_id: str, model: str
) -> None:
    pricer = Pricer()
    rng = random.Random(model)
    for inp, out, cache_read, reasoning in random_usages(rng, 300):
        expected = reference(provider_id, model, inp, out, cache_read, reasoning)
        assert expected is not None
        got = pricer.price(span_provider, model, inp, out, cache_read, reasoning, NOW_NS)
        assert got == expected, (model, inp, out, cache_read, reasoning)
        assert got.as_tuple().exponent == -12


def test_cache_write_tokens_are_priced_like_genai_prices() -> None:
    pricer = Pricer()
    rng = random.Random(7)
    for model in ("claude-3-5-sonnet-latest", "claude-sonnet-4-5", "gpt-4o"):
        for _ in range(100):
            inp = rng.randint(0, 400_000)
            cache_read = rng.randint(0, inp // 2)
            cache_write = rng.randint(0, inp // 2)
            out = rng.randint(0, 4_000)
            expected = reference(None, model, inp, out, cache_read, 0, NOW_NS, cache_write)
            got = pricer.price("", model, inp, out, cache_read, 0, NOW_NS, cache_write)
            assert got == expected


def test_known_values_by_hand() -> None:
    pricer = Pricer()
    # gpt-4o: $2.50 / MTok input, $1.25 cached input, $10 output.
    assert pricer.price("openai", "gpt-4o", 1_000, 500, 0, 0, NOW_NS) == Decimal("0.0075")
    assert pricer.price("openai", "gpt-4o", 1_000, 500, 400, 0, NOW_NS) == Decimal("0.007")
    # gemini-1.5-pro above 128k input tokens: every token at the higher tier.
    low = pricer.price("gcp.gemini", "gemini-1.5-pro", 128_000, 1_000, 0, 0, NOW_NS)
    high = pricer.price("gcp.gemini", "gemini-1.5-pro", 128_001, 1_000, 0, 0, NOW_NS)
    assert low == reference("google", "gemini-1.5-pro", 128_000, 1_000)
    assert high == reference("google", "gemini-1.5-pro", 128_001, 1_000)
    assert high is not None and low is not None and high > low * 2 - Decimal("0.01")


def test_reasoning_tokens_stay_output_tokens_unless_priced_separately() -> None:
    pricer = Pricer()
    with_reasoning = pricer.price("openai", "o3-mini", 1_000, 2_000, 0, 1_500, NOW_NS)
    without = pricer.price("openai", "o3-mini", 1_000, 2_000, 0, 0, NOW_NS)
    assert with_reasoning == without  # o3-mini has no separate reasoning price
    deep = pricer.price("perplexity", "sonar-deep-research", 1_000, 2_000, 0, 1_500, NOW_NS)
    assert deep == reference("perplexity", "sonar-deep-research", 1_000, 2_000, 0, 1_500)
    assert deep != pricer.price("perplexity", "sonar-deep-research", 1_000, 2_000, 0, 0, NOW_NS)


def test_inconsistent_counts_are_refused_like_genai_prices() -> None:
    pricer = Pricer()
    # More cache reads than input tokens: genai-prices raises, we return None.
    assert reference("openai", "gpt-4o", 10, 10, 20) is None
    assert pricer.price("openai", "gpt-4o", 10, 10, 20, 0, NOW_NS) is None
    # Reasoning above output, for a model pricing reasoning separately.
    assert reference("perplexity", "sonar-deep-research", 10, 10, 0, 20) is None
    assert pricer.price("perplexity", "sonar-deep-research", 10, 10, 0, 20, NOW_NS) is None
    # Negative counts never reach the library.
    assert pricer.price("openai", "gpt-4o", -1, 10, 0, 0, NOW_NS) is None


def test_huge_usage_falls_back_to_the_library_and_still_matches() -> None:
    pricer = Pricer()
    for inp, out in [(10**20, 10**19), (10**24, 3)]:
        expected = reference("openai", "gpt-4o", inp, out)
        assert pricer.price("openai", "gpt-4o", inp, out, 0, 0, NOW_NS) == expected


def test_unknown_model_is_none_and_cached() -> None:
    pricer = Pricer()
    assert pricer.price("openai", "my-finetune-xyz", 100, 100, 0, 0, NOW_NS) is None
    assert pricer.quote("openai", "my-finetune-xyz", NOW_NS) is None
    assert ("openai", "my-finetune-xyz") in pricer._models
    assert pricer.price("", "", 100, 100, 0, 0, NOW_NS) is None


def test_provider_names_map_to_genai_prices_ids() -> None:
    assert price_provider_id("azure.ai.openai") == "azure"
    assert price_provider_id("gcp.vertex_ai") == "google"
    assert price_provider_id("aws.bedrock") == "aws"
    assert price_provider_id("OpenAI") == "openai"
    assert price_provider_id("mistral_ai") == "mistral"
    assert price_provider_id("") is None
    pricer = Pricer()
    # Azure prices OpenAI models through its fallback to OpenAI's price list.
    assert pricer.price("azure.ai.openai", "gpt-4o", 1000, 100, 0, 0, NOW_NS) == reference(
        "azure", "gpt-4o", 1000, 100
    )
    # An unknown provider name prices by the model alone.
    assert pricer.price("my-proxy", "gpt-4o-mini", 1000, 100, 0, 0, NOW_NS) == reference(
        None, "gpt-4o-mini", 1000, 100
    )
    # A known provider that does not sell the model: no price, never a guess.
    assert pricer.price("anthropic", "gpt-4o", 1000, 100, 0, 0, NOW_NS) is None


def test_prices_follow_the_span_date() -> None:
    pricer = Pricer()
    before = int(datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp()) * 10**9
    after = int(datetime(2025, 6, 20, 12, tzinfo=UTC).timestamp()) * 10**9
    old = pricer.price("openai", "o3", 10_000, 1_000, 0, 0, before)
    new = pricer.price("openai", "o3", 10_000, 1_000, 0, 0, after)
    assert old == reference("openai", "o3", 10_000, 1_000, 0, 0, before)
    assert new == reference("openai", "o3", 10_000, 1_000, 0, 0, after)
    assert old != new  # o3's price changed on 2025-06-10


def test_time_of_day_prices_are_resolved_per_span() -> None:
    pricer = Pricer()
    day = int(datetime(2025, 10, 9, tzinfo=UTC).timestamp()) * 10**9
    hour = 3_600 * 10**9
    seen = set()
    for minutes in range(0, 24 * 60, 7):
        ts = day + minutes * 60 * 10**9 + 123_456_789
        got = pricer.price("deepseek", "deepseek-chat", 50_000, 2_000, 10_000, 0, ts)
        assert got == reference("deepseek", "deepseek-chat", 50_000, 2_000, 10_000, 0, ts)
        seen.add(got)
    assert len(seen) == 2  # peak and off-peak
    # Exactly at the boundaries (00:30 and 16:30 UTC).
    for ts in (day + hour // 2, day + hour // 2 - 1000, day + 16 * hour + hour // 2):
        assert pricer.price("deepseek", "deepseek-chat", 1, 1, 0, 0, ts) == reference(
            "deepseek", "deepseek-chat", 1, 1, 0, 0, ts
        )


def test_override_wins_and_uses_the_same_token_semantics() -> None:
    pricer = Pricer()
    override = ModelPriceOverride(
        input_mtok=Decimal("2"), output_mtok=Decimal("8"), cache_read_mtok=Decimal("0.5")
    )
    cost, source = pricer.cost(
        "openai", "gpt-4o", 1_000_000, 100_000, 400_000, 0, NOW_NS, overrides={"gpt-4o": override}
    )
    # 600k uncached input * $2 + 400k cached * $0.5 + 100k output * $8
    assert (cost, source) == (Decimal("2.200000000000"), SOURCE_OVERRIDE)
    no_cache_price = ModelPriceOverride(input_mtok=Decimal("2"), output_mtok=Decimal("8"))
    cost, _ = pricer.cost(
        "openai",
        "gpt-4o",
        1_000_000,
        100_000,
        400_000,
        0,
        NOW_NS,
        overrides={"gpt-4o": no_cache_price},
    )
    assert cost == Decimal("2.8")  # cache reads stay input tokens
    reasoning = ModelPriceOverride(
        input_mtok=Decimal("1"), output_mtok=Decimal("4"), reasoning_mtok=Decimal("10")
    )
    cost, _ = pricer.cost(
        "x", "my-model", 0, 1_000_000, 0, 250_000, NOW_NS, overrides={"my-model": reasoning}
    )
    assert cost == Decimal("5.5")  # 750k output * $4 + 250k reasoning * $10
    # Odd prices are still exact (more than 6 decimal places).
    fine = ModelPriceOverride(input_mtok=Decimal("0.123456789"), output_mtok=Decimal("0"))
    cost, _ = pricer.cost("x", "m", 3, 0, 0, 0, NOW_NS, overrides={"m": fine})
    assert cost == (Decimal("0.123456789") * 3 / 1_000_000).quantize(QUANTUM, ROUND_HALF_EVEN)


def test_attribute_cost_wins_over_everything() -> None:
    pricer = Pricer()
    override = ModelPriceOverride(input_mtok=Decimal("2"), output_mtok=Decimal("8"))
    assert pricer.cost(
        "openai",
        "gpt-4o",
        1000,
        100,
        0,
        0,
        NOW_NS,
        overrides={"gpt-4o": override},
        attribute_cost="0.0123",
    ) == (Decimal("0.0123"), SOURCE_ATTRIBUTE)
    # An unusable attribute falls through to the next source.
    cost, source = pricer.cost("openai", "gpt-4o", 1000, 100, 0, 0, NOW_NS, attribute_cost="n/a")
    assert source == SOURCE_GENAI_PRICES and cost == reference("openai", "gpt-4o", 1000, 100)
    assert pricer.cost("openai", "nope", 1, 1, 0, 0, NOW_NS) == (None, SOURCE_NONE)


def test_cost_parsing_and_quantization() -> None:
    assert parse_cost("0.1234567890125") == Decimal("0.123456789012")  # half-even
    assert parse_cost("0.1234567890135") == Decimal("0.123456789014")
    assert parse_cost("1e-3") == Decimal("0.001")
    assert parse_cost("-1") is None
    assert parse_cost("NaN") is None
    assert parse_cost("inf") is None
    assert parse_cost("1e30") is None  # does not fit Decimal(38, 12)
    assert quantize_usd(Decimal("2.5")) == Decimal("2.500000000000")


def test_snapshot_change_clears_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from genai_prices import data_snapshot

    pricer = Pricer()
    assert pricer.price("openai", "gpt-4o", 1, 1, 0, 0, NOW_NS) is not None
    current = data_snapshot.get_snapshot()
    replacement = data_snapshot.DataSnapshot(providers=[], from_auto_update=True)
    monkeypatch.setattr(data_snapshot, "_custom_snapshot", replacement)
    pricer.refresh()
    assert pricer.price("openai", "gpt-4o", 1, 1, 0, 0, NOW_NS) is None
    monkeypatch.setattr(data_snapshot, "_custom_snapshot", None)
    pricer.refresh()
    assert data_snapshot.get_snapshot() is current
    assert pricer.price("openai", "gpt-4o", 1, 1, 0, 0, NOW_NS) is not None


def test_price_shapes_the_integer_form_rejects_use_the_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streams import pricing

    monkeypatch.setattr(pricing, "_agrees_with_library", lambda *_: False)
    pricer = Pricer()
    for inp, out, cache_read in [(1_000, 200, 300), (250_000, 10, 0), (10, 10, 20)]:
        assert pricer.price("anthropic", "claude-sonnet-4-5", inp, out, cache_read, 0, NOW_NS) == (
            reference("anthropic", "claude-sonnet-4-5", inp, out, cache_read)
        )


def _linear_e12(form: tuple[int, ...], inp: int, out: int, cr: int, cw: int, rs: int) -> int | None:
    """The formula `linear_form` documents, evaluated independently of pricing.py."""
    c_in, c_out, c_cr, c_cw, c_rs, s_cr, s_cw, s_rs, constant, factor = form
    if inp - cr * s_cr - cw * s_cw < 0 or out - rs * s_rs < 0:
        return None
    n = c_in * (inp - cr - cw) + c_out * (out - rs) + c_cr * cr + c_cw * cw + c_rs * rs
    return (n + constant) * factor


@pytest.mark.parametrize(
    "quote",
    [
        lambda pricer: pricer.quote("openai", "gpt-4o", NOW_NS),
        lambda pricer: pricer.quote("anthropic", "claude-3-5-sonnet-latest", NOW_NS),
        lambda pricer: pricer.override_quote(
            ModelPriceOverride(input_mtok=Decimal("1.5"), output_mtok=Decimal("6"))
        ),
    ],
)
def test_common_prices_have_a_linear_form_that_computes_their_cost(quote: Any) -> None:
    """The compiled normaliser prices these without calling Python: the integers it is
    given must say what the price function says."""
    fn = quote(Pricer())
    form = linear_form(fn)
    assert form is not None and len(form) == 10
    rng = random.Random(3)
    for _ in range(200):
        inp, out = rng.randrange(200_000), rng.randrange(20_000)
        usage = (inp, out, rng.randrange(inp + 1), 0, rng.randrange(out + 1))
        usd = fn(*usage, NOW_NS)
        e12 = _linear_e12(form, *usage)
        assert (None if usd is None else usd_to_e12(usd)) == e12, usage
