"""Privacy policies for prompt and completion content."""

from __future__ import annotations

import hashlib

import pytest

from schema.models import PrivacyPolicy
from streams.redact import (
    API_KEY,
    CARD,
    EMAIL,
    PHONE,
    SECRET,
    TOKEN,
    content_filter,
    filter_attributes,
    hash_text,
    is_content,
    is_event_content,
    redact_text,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at a@b.co", f"mail me at {EMAIL}"),
        ("John.Doe+tag@mail.example.org.", f"{EMAIL}."),
        ("a@b.co and c@d.org", f"{EMAIL} and {EMAIL}"),
        ('{"content":"x@example.com"}', '{"content":"' + EMAIL + '"}'),
        ("call +1 415 555 2671 now", f"call {PHONE} now"),
        ("(415) 555-2671", PHONE),
        ("415-555-2671.", f"{PHONE}."),
        ("+44 20 7946 0958", PHONE),
        ("+4915112345678", PHONE),
        ("4111 1111 1111 1111", CARD),
        ("card 4111-1111-1111-1111 exp", f"card {CARD} exp"),
        ("4111111111111111", CARD),
        ("amex 378282246310005", f"amex {CARD}"),
        ("Authorization: Bearer abcdef123456789.xyz", f"Authorization: Bearer {TOKEN}"),
        ("sk-proj-abcdefghijklmnop1234", API_KEY),
        ("anthropic sk-ant-api03-abcdefghijklmnopqrstu", f"anthropic {API_KEY}"),
        ("key AKIAIOSFODNN7EXAMPLE here", f"key {API_KEY} here"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", API_KEY),
        ("xoxb-1234567890-abcdef", API_KEY),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", TOKEN),
        ("api_key=Zx9yQ2w8E7r6T5y4", f"api_key={SECRET}"),
        ("my_api_key = 'abcdefghijk123'", f"my_api_key = '{SECRET}'"),
        ('{"password": "hunter2hunter2"}', '{"password": "' + SECRET + '"}'),
        ("Token: abcdefgh12345678", f"Token: {SECRET}"),
    ],
)
def test_redaction_replaces_secrets_and_personal_data(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # fails the Luhn check
        "id 1234567812345678",  # no card prefix, no separators
        "1700000000000000000",  # a timestamp
        "2024-01-15",
        "192.168.100.200",
        "version 1.2.3",
        "pi is 3.14159265358979",
        "max tokens=1024",
        "monkey=abcdefghijk",
        "x@y",
        "risk-free task-force",
        '{"role":"assistant","content":"keyboard"}',
        "The quick brown fox jumps over the lazy dog.",
        "12345",
    ],
)
def test_redaction_leaves_ordinary_text_alone(text: str) -> None:
    assert redact_text(text) == text


def test_hashing_is_sha256_of_the_utf8_value() -> None:
    assert hash_text("héllo") == "sha256:" + hashlib.sha256("héllo".encode()).hexdigest()


def test_each_policy() -> None:
    text = "write to a@b.co"
    assert content_filter(PrivacyPolicy.FULL)(text) == text
    assert content_filter(PrivacyPolicy.REDACTED)(text) == f"write to {EMAIL}"
    assert content_filter(PrivacyPolicy.HASHED)(text) == hash_text(text)
    assert content_filter(PrivacyPolicy.OFF)(text) is None


@pytest.mark.parametrize(
    "key",
    [
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.prompt",
        "gen_ai.prompt.0.content",
        "gen_ai.completion.0.content",
        "gen_ai.tool.call.arguments",
        "input.value",
        "output.value",
        "llm.input_messages.0.message.content",
        "llm.output_messages.1.message.content",
        "llm.prompts.0.prompt.text",
        "llm.completions.0.content",
        "traceloop.entity.input",
    ],
)
def test_content_keys(key: str) -> None:
    assert is_content(key)


@pytest.mark.parametrize(
    "key",
    [
        "gen_ai.prompt.name",
        "gen_ai.request.model",
        "gen_ai.usage.prompt_tokens",
        "gen_ai.prompts",
        "input.mime_type",
        "llm.prompt_template.version",
        "content",
        "user.id",
    ],
)
def test_not_content_keys(key: str) -> None:
    assert not is_content(key)


def test_generic_keys_are_content_inside_genai_message_events_only() -> None:
    assert is_event_content("gen_ai.user.message", "content")
    assert is_event_content("gen_ai.content.prompt", "gen_ai.prompt")
    assert not is_event_content("exception", "content")
    assert not is_event_content("gen_ai.choice", "index")


def test_filter_attributes_touches_only_content() -> None:
    attributes = {"gen_ai.prompt": "hi a@b.co", "gen_ai.request.model": "gpt-4o"}
    assert filter_attributes(attributes, PrivacyPolicy.REDACTED) == {
        "gen_ai.prompt": f"hi {EMAIL}",
        "gen_ai.request.model": "gpt-4o",
    }
    assert filter_attributes(attributes, PrivacyPolicy.OFF) == {"gen_ai.request.model": "gpt-4o"}
    plain = {"a": "b@c.de"}
    assert filter_attributes(plain, PrivacyPolicy.REDACTED) is plain
    assert filter_attributes(
        {"content": "x@y.io"}, PrivacyPolicy.HASHED, "gen_ai.user.message"
    ) == {"content": hash_text("x@y.io")}
