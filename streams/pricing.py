"""Cost of an LLM call in USD, exactly as genai-prices computes it, at about a µs per span.

`genai_prices.calc_price` costs ~120 µs per call (model matching, usage validation, Decimal
arithmetic), far too slow per span. `Pricer` asks genai-prices once per (provider, model) which
model and price apply, caches the answer (an unknown model is cached too: its cost is None,
never a guess) and compiles the price into a small integer function; per span that function
does a few integer multiply-adds and builds one Decimal.

Exactness. For token usage genai-prices charges each priced unit for its "leaf" count:
`input_tokens` includes cache-read and cache-write tokens, so the input price applies to
`input - cache_read - cache_write` (only for the cache kinds the model prices separately;
the others stay input tokens), and `output_tokens` includes reasoning tokens (charged
separately only when the model has an `output_reasoning_mtok` price). Tiered prices (Gemini
Pro, Claude Sonnet 4.5 above 200k input tokens, ...) apply the tier reached by `input_tokens`
to all tokens of every unit. A compiled price holds every price times 10**S (S = the most
decimal places among its prices) as an int, so a cost is an exact rational N / 10**(S+6).
genai-prices' Decimal arithmetic (28 digits) is exact too while N < 10**27, so both round to
the same value at 12 places (ROUND_HALF_EVEN, the ClickHouse Decimal(38,12) column). Beyond
that range, and for price shapes the integer form does not model, the library's own
`ModelPrice.calc_price` runs on the cached price object. Every compiled price is checked
against the library on probe usages before use; one that disagrees is replaced by the library.

Time. Prices that change on a date (`StartDateConstraint`) are compiled per UTC day of the
call; prices that depend on the time of day (`TimeOfDateConstraint`, e.g. DeepSeek off-peak)
per interval of the day in which the price is constant.

Precedence (`Pricer.cost`): a cost attribute on the span wins, then the tenant's
`price_overrides[model]`, then genai-prices.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any, Final

from genai_prices import Usage
from genai_prices import data_snapshot as _data_snapshot
from genai_prices import types as _gp

from schema.models import ModelPriceOverride
from schema.semconv import PROVIDER_PRICE_IDS

SOURCE_ATTRIBUTE: Final = "attribute"
SOURCE_OVERRIDE: Final = "override"
SOURCE_GENAI_PRICES: Final = "genai-prices"
SOURCE_NONE: Final = ""

COST_PLACES: Final = 12
_QUANTUM: Final = Decimal(1).scaleb(-COST_PLACES)
_CTX: Final = Context(prec=60, rounding=ROUND_HALF_EVEN)
_MAX_COST: Final = Decimal(10) ** 26  # Decimal(38, 12) holds |x| < 10**26
_EXACT_LIMIT: Final = 10**27  # genai-prices' 28-digit arithmetic is exact below this
_SMALL_E12: Final = 10**18  # `_PICO * n` is exact in any sane decimal context below this
_PICO: Final = Decimal("1E-12")
_NS_PER_DAY: Final = 86_400 * 10**9
_US_PER_DAY: Final = 86_400 * 10**6
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_CACHED: Final = 4096

# A price function: (input, output, cache_read, cache_write, reasoning, timestamp_ns) -> USD.
PriceFn = Callable[[int, int, int, int, int, int], "Decimal | None"]

# genai-prices price keys the integer form models, and what they price.
_INPUT, _OUTPUT, _CACHE_READ, _CACHE_WRITE, _REASONING = range(5)
_TOKEN_PRICE_KEYS: Final = {
    "input_mtok": _INPUT,
    "output_mtok": _OUTPUT,
    "cache_read_mtok": _CACHE_READ,
    "cache_write_mtok": _CACHE_WRITE,
    "output_reasoning_mtok": _REASONING,
}
_REQUESTS_PRICE_KEY: Final = "requests_kcount"  # USD per 1000 requests

# Results of `_IntPrice.e12` that are not costs.
REFUSED: Final = -1  # inconsistent usage (e.g. cache reads above input): genai-prices raises
INEXACT: Final = -2  # beyond the exact integer range: ask the library


def quantize_usd(value: Decimal) -> Decimal | None:
    """`value` rounded half-even to 12 places, or None if it is not a storable cost."""
    try:
        if not value.is_finite() or value < 0 or value >= _MAX_COST:
            return None
        return value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN, context=_CTX)
    except InvalidOperation:
        return None


def parse_cost(text: str) -> Decimal | None:
    """A cost attribute's value (the normaliser holds it as a string) in USD, or None."""
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return quantize_usd(value)


def ns_to_datetime(timestamp_ns: int) -> datetime:
    """The UTC datetime of `timestamp_ns` (microsecond precision, as genai-prices compares)."""
    return _EPOCH + timedelta(microseconds=timestamp_ns // 1000)


def price_provider_id(provider: str) -> str | None:
    """The genai-prices provider id for a provider name as spans report it (None if empty)."""
    if not provider:
        return None
    lowered = provider.strip().lower()
    return PROVIDER_PRICE_IDS.get(lowered, lowered)


def e12_to_usd(e12: int) -> Decimal:
    """A cost in 1e-12 USD as a Decimal with exponent -12."""
    if e12 < _SMALL_E12:
        return _PICO * e12
    return _CTX.scaleb(Decimal(e12), -COST_PLACES)


class _IntPrice:
    """A price as integers: `e12` gives the exact cost in 1e-12 USD, rounded half-even."""

    def __init__(
        self,
        prices: Mapping[int, Decimal | _gp.TieredPrices],
        requests_kcount: Decimal | None = None,
    ) -> None:
        decimals: list[Decimal] = [] if requests_kcount is None else [requests_kcount]
        for price in prices.values():
            if isinstance(price, _gp.TieredPrices):
                decimals.append(price.base)
                decimals.extend(tier.price for tier in price.tiers)
            else:
                decimals.append(price)
        scale = max([0, *(-int(d.as_tuple().exponent) for d in decimals)])
        # cost = N / 10**(scale + 6) USD, i.e. N * 10**(6 - scale) in 1e-12 USD.
        self.factor: int = 10 ** max(0, 6 - scale)
        self.divisor: int = 10 ** max(0, scale - 6)
        unit: int = 10**scale
        self.constant = 0 if requests_kcount is None else int(requests_kcount * unit) * 1000
        # 0/1: whether a kind is charged separately (else it stays in input / output).
        self.split = (
            int(_CACHE_READ in prices),
            int(_CACHE_WRITE in prices),
            int(_REASONING in prices),
        )
        self.thresholds = tuple(
            sorted(
                {
                    tier.start
                    for price in prices.values()
                    if isinstance(price, _gp.TieredPrices)
                    for tier in price.tiers
                }
            )
        )
        segments: list[tuple[int, ...]] = []
        # Segment i applies when thresholds[i-1] < input_tokens <= thresholds[i].
        for bound in [-1, *self.thresholds]:
            c = [
                int(_at_input(prices.get(kind, Decimal(0)), bound + 1) * unit) for kind in range(5)
            ]
            # Unsplit kinds are charged at the input/output price: fold that into coefficients.
            if not self.split[0]:
                c[_CACHE_READ] = c[_INPUT]
            if not self.split[1]:
                c[_CACHE_WRITE] = c[_INPUT]
            if not self.split[2]:
                c[_REASONING] = c[_OUTPUT]
            segments.append(tuple(c))
        self.segments: tuple[tuple[int, ...], ...] = tuple(segments)

    def e12(self, inp: int, out: int, cr: int, cw: int, rs: int) -> int:
        """Cost in 1e-12 USD, or REFUSED / INEXACT."""
        split_cr, split_cw, split_rs = self.split
        if (
            inp - cr * split_cr - cw * split_cw < 0
            or out - rs * split_rs < 0
            or min(inp, out, cr, cw, rs) < 0
        ):
            return REFUSED
        c = self.segments[bisect_left_strict(self.thresholds, inp)]
        n = (
            c[0] * (inp - cr - cw)
            + c[1] * (out - rs)
            + c[2] * cr
            + c[3] * cw
            + c[4] * rs
            + self.constant
        )
        if n >= _EXACT_LIMIT:
            return INEXACT
        divisor = self.divisor
        if divisor == 1:
            return n * self.factor
        q, r = divmod(n, divisor)
        half = divisor // 2
        if r > half or (r == half and q & 1):
            q += 1
        return q

    def function(self, fallback: Callable[[int, int, int, int, int], Decimal | None]) -> PriceFn:
        """A closure computing USD per span; `fallback` handles INEXACT usages."""
        if self.thresholds or self.divisor != 1:
            e12 = self.e12

            def general(inp: int, out: int, cr: int, cw: int, rs: int, ts: int) -> Decimal | None:
                value = e12(inp, out, cr, cw, rs)
                if value >= 0:
                    return e12_to_usd(value)
                return None if value == REFUSED else fallback(inp, out, cr, cw, rs)

            return general
        c_in, c_out, c_cr, c_cw, c_rs = self.segments[0]
        s_cr, s_cw, s_rs = self.split
        constant, factor = self.constant, self.factor
        pico, small = _PICO, _SMALL_E12

        def simple(inp: int, out: int, cr: int, cw: int, rs: int, ts: int) -> Decimal | None:
            rest_in = inp - cr - cw
            rest_out = out - rs
            if inp - cr * s_cr - cw * s_cw < 0 or rest_out + rs * (1 - s_rs) < 0:
                return None
            n = c_in * rest_in + c_out * rest_out + c_cr * cr + c_cw * cw + c_rs * rs + constant
            e12 = n * factor
            if e12 < small:
                return pico * e12
            if n >= _EXACT_LIMIT:
                return fallback(inp, out, cr, cw, rs)
            return e12_to_usd(e12)

        # the same form as integers, for the compiled normaliser (`linear_form`)
        simple.linear = (  # type: ignore[attr-defined]
            c_in,
            c_out,
            c_cr,
            c_cw,
            c_rs,
            s_cr,
            s_cw,
            s_rs,
            constant,
            factor,
        )
        return simple


def linear_form(fn: PriceFn) -> tuple[int, ...] | None:
    """The integers of a linear price function, for code that evaluates it elsewhere.

    (c_input, c_output, c_cache_read, c_cache_write, c_reasoning, split_cache_read,
    split_cache_write, split_reasoning, constant, factor): the cost in 1e-12 USD is
    `factor * (c_input * (input - cache_read - cache_write) + c_output * (output - reasoning)
    + c_cache_read * cache_read + c_cache_write * cache_write + c_reasoning * reasoning
    + constant)`, refused when `input - cache_read * split_cache_read - cache_write *
    split_cache_write < 0` or `output - reasoning * split_reasoning < 0`, and only exact while
    the sum stays below 10**27 (beyond that, call `fn`). None for any other price function.
    """
    linear: tuple[int, ...] | None = getattr(fn, "linear", None)
    return linear


def usd_to_e12(value: Decimal) -> int:
    """A cost quantized to 12 places as an integer number of 1e-12 USD."""
    return int(value.scaleb(COST_PLACES, _CTX))


def bisect_left_strict(thresholds: tuple[int, ...], value: int) -> int:
    """How many thresholds `value` exceeds (tiers apply strictly above their start)."""
    if not thresholds:
        return 0
    return bisect_right(thresholds, value - 1)


def _at_input(price: Decimal | _gp.TieredPrices, input_tokens: int) -> Decimal:
    if not isinstance(price, _gp.TieredPrices):
        return price
    for tier in reversed(price.tiers):
        if input_tokens > tier.start:
            return tier.price
    return price.base


def _valid_price(value: Any) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite() and value >= 0
    if isinstance(value, _gp.TieredPrices):
        return all(_valid_price(p) for p in [value.base, *(t.price for t in value.tiers)])
    return False


def _int_price_for(model_price: _gp.ModelPrice) -> _IntPrice | None:
    prices: dict[int, Decimal | _gp.TieredPrices] = {}
    requests_kcount: Decimal | None = None
    for key, value in vars(model_price).items():
        if key.startswith("_") or value is None:
            continue
        kind = _TOKEN_PRICE_KEYS.get(key)
        if kind is not None:
            if not _valid_price(value):
                return None
            prices[kind] = value
        elif key == _REQUESTS_PRICE_KEY:
            if not isinstance(value, Decimal) or not _valid_price(value):
                return None
            requests_kcount = value
        # Any other priced unit (audio, images, web searches, ...) is never reported by a
        # span, so genai-prices charges 0 for it; the probe check confirms that.
    if _INPUT not in prices and _OUTPUT not in prices:
        return None
    return _IntPrice(prices, requests_kcount)


def _library_e12(
    model_price: _gp.ModelPrice, inp: int, out: int, cr: int, cw: int, rs: int
) -> int | None:
    """genai-prices' own computation on the cached price object, in 1e-12 USD."""
    usage = Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cr,
        cache_write_tokens=cw,
        output_reasoning_tokens=rs,
    )
    try:
        total = model_price.calc_price(usage)["total_price"]
    except (ValueError, ArithmeticError):
        return None
    quantized = quantize_usd(total)
    if quantized is None:
        return None
    return usd_to_e12(quantized)


def _agrees_with_library(price: _IntPrice, model_price: _gp.ModelPrice) -> bool:
    probes = [
        (0, 0, 0, 0, 0),
        (1_000, 0, 0, 0, 0),
        (0, 1_000, 0, 0, 0),
        (1_000, 0, 400, 0, 0),
        (1_000, 0, 0, 300, 0),
        (0, 1_000, 0, 0, 400),
        (123_457, 98_765, 23_456, 12_345, 4_321),
        (7, 3, 5, 0, 0),
        (10, 10, 20, 0, 0),  # cache reads above input: refused when cache reads are priced
        (10, 10, 0, 0, 20),  # reasoning above output: likewise
    ]
    for start in price.thresholds:
        probes += [(start, 777, 0, 0, 0), (start + 1, 777, 11, 7, 5), (start + 1, 0, 0, 0, 0)]
    for usage in probes:
        mine: int | None = price.e12(*usage)
        if mine == REFUSED:
            mine = None
        if mine != _library_e12(model_price, *usage):
            return False
    return True


def _compile(model_price: _gp.ModelPrice) -> PriceFn:
    """The fastest exact price function for one genai-prices price object."""

    def library(inp: int, out: int, cr: int, cw: int, rs: int) -> Decimal | None:
        e12 = _library_e12(model_price, inp, out, cr, cw, rs)
        return None if e12 is None else e12_to_usd(e12)

    int_price = _int_price_for(model_price)
    if int_price is not None and _agrees_with_library(int_price, model_price):
        return int_price.function(library)

    def library_fn(inp: int, out: int, cr: int, cw: int, rs: int, ts: int) -> Decimal | None:
        return library(inp, out, cr, cw, rs)

    return library_fn


def _time_of_day_us(value: time) -> int:
    """A constraint time as microseconds since UTC midnight (naive times are UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    utc = datetime.combine(date(1970, 1, 1), value).astimezone(UTC).timetz()
    return ((utc.hour * 60 + utc.minute) * 60 + utc.second) * 10**6 + utc.microsecond


class _Model:
    """One resolved genai-prices model: its compiled prices, per day or time of day."""

    def __init__(self, info: _gp.ModelInfo) -> None:
        self.info = info
        self._compiled: dict[int, tuple[_gp.ModelPrice, PriceFn]] = {}  # by id(ModelPrice)
        self._days: dict[int, PriceFn] = {}
        prices = info.prices
        self.static: PriceFn | None = None
        self._boundaries: tuple[int, ...] = ()
        if isinstance(prices, _gp.ModelPrice):
            self.static = self._fn(prices)
        else:
            cuts = {0}
            for conditional in prices:
                constraint = conditional.constraint
                if isinstance(constraint, _gp.TimeOfDateConstraint):
                    cuts.add(_time_of_day_us(constraint.start_time))
                    cuts.add(_time_of_day_us(constraint.end_time))
            self._boundaries = tuple(sorted(cuts))

    def _fn(self, model_price: _gp.ModelPrice) -> PriceFn:
        found = self._compiled.get(id(model_price))
        if found is None or found[0] is not model_price:
            found = self._compiled[id(model_price)] = (model_price, _compile(model_price))
        return found[1]

    def for_day(self, day: int) -> PriceFn:
        """The price function valid all day (UTC), or one that resolves per timestamp."""
        if self.static is not None:
            return self.static
        fn = self._days.get(day)
        if fn is None:
            if len(self._days) >= _MAX_CACHED:
                self._days.clear()
            fn = self._days[day] = self._day_fn(day)
        return fn

    def _day_fn(self, day: int) -> PriceFn:
        midnight = _EPOCH + timedelta(days=day)
        get_prices = self.info.get_prices
        boundaries = self._boundaries
        # The price is constant on [boundaries[i], boundaries[i+1]) of this day.
        fns = tuple(
            self._fn(get_prices(midnight + timedelta(microseconds=start))) for start in boundaries
        )
        if len(fns) == 1:
            return fns[0]

        def by_time_of_day(
            inp: int, out: int, cr: int, cw: int, rs: int, ts: int
        ) -> Decimal | None:
            us = (ts // 1000) % _US_PER_DAY
            return fns[bisect_right(boundaries, us) - 1](inp, out, cr, cw, rs, ts)

        return by_time_of_day


class _Unknown:
    """A (provider, model) genai-prices has no price for (cached like a known one)."""


_UNKNOWN: Final = _Unknown()


class Pricer:
    """Prices LLM usage with genai-prices' data (bundled, or its auto-updated snapshot).

    Construction is cheap (`Pricer()`); models are resolved on first use and cached. Safe to
    share between threads: caches are only added to or replaced whole. One instance is meant
    to live as long as the process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: _data_snapshot.DataSnapshot = _data_snapshot.get_snapshot()
        self._models: dict[tuple[str, str], _Model | _Unknown] = {}
        self._overrides: dict[int, tuple[ModelPriceOverride, PriceFn | None]] = {}

    def refresh(self) -> None:
        """Drop cached prices if genai-prices switched to a new snapshot (auto-update)."""
        snapshot = _data_snapshot.get_snapshot()
        if snapshot is not self._snapshot:
            with self._lock:
                self._snapshot = snapshot
                self._models = {}

    def quote(self, provider: str, model: str, timestamp_ns: int) -> PriceFn | None:
        """genai-prices' price function for `model` on the UTC day of `timestamp_ns`.

        None when genai-prices does not know the model. The function takes (input, output,
        cache_read, cache_write, reasoning, timestamp_ns) and returns the USD cost quantized to
        12 places, or None if genai-prices refuses the usage (e.g. more cache reads than input
        tokens). Normalisers call this once per (provider, model, day) in a request.
        """
        found = self._models.get((provider, model))
        if found is None:
            found = self._resolve(provider, model)
        if isinstance(found, _Unknown):
            return None
        return found.for_day(timestamp_ns // _NS_PER_DAY)

    def override_quote(self, override: ModelPriceOverride) -> PriceFn | None:
        """The price function for a tenant's own prices (USD per million tokens).

        Same token semantics as genai-prices: cache-read tokens are charged at
        `cache_read_mtok` when set (else they stay input tokens), reasoning tokens at
        `reasoning_mtok` when set (else they stay output tokens, at the output price),
        cache-write tokens at the input price. None if a price is negative or not finite.
        """
        cached = self._overrides.get(id(override))
        if cached is None or cached[0] is not override:
            if len(self._overrides) >= _MAX_CACHED:
                self._overrides = {}
            cached = self._overrides[id(override)] = (override, _override_fn(override))
        return cached[1]

    def price(
        self,
        provider: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        reasoning_tokens: int = 0,
        timestamp_ns: int = 0,
        cache_write_tokens: int = 0,
    ) -> Decimal | None:
        """genai-prices' total price quantized to 12 places; None for unknown models.

        Token counts follow the GenAI conventions: `input_tokens` includes cache-read and
        cache-write tokens, `output_tokens` includes reasoning tokens. `timestamp_ns` is when
        the call was made (prices change over time); 0 means now.
        """
        if min(input_tokens, output_tokens, cache_read_tokens, reasoning_tokens) < 0:
            return None
        if cache_write_tokens < 0:
            return None
        if not timestamp_ns:
            timestamp_ns = _now_ns()
        fn = self.quote(provider, model, timestamp_ns)
        if fn is None:
            return None
        return fn(
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
            reasoning_tokens,
            timestamp_ns,
        )

    def cost(
        self,
        provider: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        reasoning_tokens: int = 0,
        timestamp_ns: int = 0,
        cache_write_tokens: int = 0,
        *,
        overrides: Mapping[str, ModelPriceOverride] | None = None,
        attribute_cost: str | None = None,
    ) -> tuple[Decimal | None, str]:
        """(cost, source): the span's own cost attribute, else the tenant override for
        `model`, else genai-prices. Source is "attribute" | "override" | "genai-prices", or ""
        when unpriced (cost None)."""
        if attribute_cost is not None:
            value = parse_cost(attribute_cost)
            if value is not None:
                return value, SOURCE_ATTRIBUTE
        if min(input_tokens, output_tokens, cache_read_tokens, reasoning_tokens) < 0:
            return None, SOURCE_NONE
        if cache_write_tokens < 0:
            return None, SOURCE_NONE
        if not timestamp_ns:
            timestamp_ns = _now_ns()
        counts = (
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
            reasoning_tokens,
            timestamp_ns,
        )
        override = overrides.get(model) if overrides and model else None
        if override is not None:
            fn = self.override_quote(override)
            value = None if fn is None else fn(*counts)
            return value, SOURCE_OVERRIDE if value is not None else SOURCE_NONE
        fn = self.quote(provider, model, timestamp_ns) if model else None
        value = None if fn is None else fn(*counts)
        return value, SOURCE_GENAI_PRICES if value is not None else SOURCE_NONE

    def _resolve(self, provider: str, model: str) -> _Model | _Unknown:
        info = find_model_info(self._snapshot, provider, model)
        found: _Model | _Unknown = _UNKNOWN if info is None else _Model(info)
        with self._lock:
            if len(self._models) >= _MAX_CACHED:
                self._models = {}
            self._models[(provider, model)] = found
        return found


def find_model_info(snapshot: Any, provider: str, model: str) -> Any | None:
    """genai-prices' `ModelInfo` for `model` (of `provider` when genai-prices knows that
    provider, else by the model name alone), or None for an unknown or empty model."""
    if not model:
        return None
    provider_id = price_provider_id(provider)
    if provider_id is not None and provider_id != "litellm":
        try:
            snapshot.find_provider(None, provider_id, None)
        except LookupError:
            provider_id = None  # a provider genai-prices does not know: model only
    try:
        _, info = snapshot.find_provider_model(model, None, provider_id, None)
    except LookupError:
        return None
    return info


def _now_ns() -> int:
    delta = datetime.now(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _override_fn(override: ModelPriceOverride) -> PriceFn | None:
    prices: dict[int, Decimal | _gp.TieredPrices] = {
        _INPUT: override.input_mtok,
        _OUTPUT: override.output_mtok,
    }
    if override.cache_read_mtok is not None:
        prices[_CACHE_READ] = override.cache_read_mtok
    if override.reasoning_mtok is not None:
        prices[_REASONING] = override.reasoning_mtok
    if not all(_valid_price(p) for p in prices.values()):
        return None

    def exact(inp: int, out: int, cr: int, cw: int, rs: int) -> Decimal | None:
        """Decimal arithmetic, for usages beyond the integer form's exact range."""
        cached = cr if _CACHE_READ in prices else 0
        reasoning = rs if _REASONING in prices else 0
        total = Decimal(0)
        for kind, count in (
            (_INPUT, inp - cached),
            (_OUTPUT, out - reasoning),
            (_CACHE_READ, cached),
            (_REASONING, reasoning),
        ):
            price = prices.get(kind)
            if price is not None and count:
                assert isinstance(price, Decimal)
                total = _CTX.add(total, _CTX.multiply(price, Decimal(count)))
        return quantize_usd(_CTX.scaleb(total, -6))

    return _IntPrice(prices).function(exact)
