"""The attribute-name mapping is data; check it is consistent."""

from __future__ import annotations

from genai_prices.data_snapshot import get_snapshot

from schema import semconv


def test_every_slot_has_names_and_no_name_means_two_things() -> None:
    assert set(semconv.SLOT_ATTRIBUTES) == set(range(semconv.SLOT_COUNT))
    names = [key for keys in semconv.SLOT_ATTRIBUTES.values() for key in keys]
    assert len(names) == len(set(names))
    assert all(keys for keys in semconv.SLOT_ATTRIBUTES.values())


def test_current_genai_names_come_first() -> None:
    slots = semconv.SLOT_ATTRIBUTES
    assert slots[semconv.PROVIDER][:2] == ("gen_ai.provider.name", "gen_ai.system")
    assert slots[semconv.INPUT_TOKENS][:3] == (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
    )
    assert slots[semconv.CACHE_READ_TOKENS][0] == "gen_ai.usage.cache_read.input_tokens"
    assert slots[semconv.REASONING_TOKENS][0] == "gen_ai.usage.reasoning.output_tokens"
    assert slots[semconv.TIME_TO_FIRST_TOKEN][0] == "gen_ai.response.time_to_first_chunk"
    assert set(semconv.TTFT_TO_MS) == set(slots[semconv.TIME_TO_FIRST_TOKEN])


def test_provider_map_targets_exist_in_genai_prices() -> None:
    ids = {provider.id for provider in get_snapshot().providers}
    assert set(semconv.PROVIDER_PRICE_IDS.values()) <= ids


def test_content_helper() -> None:
    assert semconv.is_content_attribute("gen_ai.prompt.3.content")
    assert semconv.is_content_attribute("input.value")
    assert not semconv.is_content_attribute("gen_ai.prompt.name")
    assert not semconv.is_content_attribute("input.values")
    assert not semconv.is_content_attribute("gen_ai.promptx")


def test_collector_names() -> None:
    assert semconv.SPAN_KIND_NAMES[3] == "Client"
    assert semconv.STATUS_CODE_NAMES == ("Unset", "Ok", "Error")
