"""Prompt and completion content, stored the way the tenant's privacy policy says.

Only content attributes (see `schema.semconv.CONTENT_ATTRIBUTES`) pay for this: whether a key
is content is decided once per distinct key and cached, never by running regexes over every
attribute of every span.

Policies:
- `full`: stored as sent.
- `redacted` (default): secrets and personal data are replaced by typed placeholders such as
  `[REDACTED:EMAIL]`; everything else is kept. Detected: bearer tokens and JWTs, API keys
  (OpenAI/Anthropic `sk-...`, AWS `AKIA...`/`ASIA...`, GitHub `ghp_...`/`github_pat_...`,
  Slack `xox.-...`, Google `AIza...`), secrets assigned to names like `api_key=`/`password:`,
  e-mail addresses, payment card numbers (13-19 digits passing the Luhn check) and phone
  numbers (9-15 digits written with separators or a leading `+`).
- `hashed`: `sha256:<hex>` of the UTF-8 value, so equal prompts can still be grouped.
- `off`: the attribute is dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from schema.models import PrivacyPolicy
from schema.semconv import (
    MESSAGE_EVENT_CONTENT_ATTRIBUTES,
    MESSAGE_EVENT_PREFIX,
    is_content_attribute,
)

EMAIL = "[REDACTED:EMAIL]"
PHONE = "[REDACTED:PHONE]"
CARD = "[REDACTED:CARD]"
TOKEN = "[REDACTED:TOKEN]"
API_KEY = "[REDACTED:API_KEY]"
SECRET = "[REDACTED:SECRET]"

# Each pattern starts with a literal or a character class (no look-behind first), so the
# regex engine scans for candidates in C instead of attempting a match at every position;
# boundaries are checked in the replacement functions.
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")

_BEARER = re.compile(r"[Bb]earer\s+[A-Za-z0-9._~+/-]{8,}=*", re.ASCII)
_VENDOR_KEYS = re.compile(
    r"(?:sk-[A-Za-z0-9_-]{16,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JSON Web Token
    r"|A(?:KIA|SIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35})"
    r"(?![A-Za-z0-9_-])",
    re.ASCII,
)
_VENDOR_HINTS = ("sk-", "eyJ", "AKIA", "ASIA", "gh", "xox", "AIza")
# A secret assigned to a telling name: `api_key=...`, `"password": "..."`. The pattern finds
# the assignment; `_SECRET_NAME` then checks the name just before it.
_ASSIGNED = re.compile(r"[=:][\"']?\s*[\"']?(?P<secret>[A-Za-z0-9_\-./+=~]{8,})", re.ASCII)
_SECRET_NAME = re.compile(
    r"(?i:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|refresh[_-]?token"
    r"|client[_-]?secret|secret[_-]?key|secret|password|passwd|pwd|token)[\"']?\s*\Z",
    re.ASCII,
)
_ASSIGNED_HINTS = ("key", "token", "secret", "passw", "pwd")

_EMAIL_LOCAL_REVERSED = re.compile(r"[A-Za-z0-9._%+-]{1,64}", re.ASCII)
_EMAIL_DOMAIN = re.compile(
    r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])", re.ASCII
)

# Digit runs that may be card numbers (Luhn-checked) or phone numbers, and phone numbers
# with the area code in parentheses. Only run when the text has at least 9 digits.
_DIGITS = re.compile(r"[0-9+](?:[ .-]?[0-9]){8,18}(?![0-9A-Za-z_])", re.ASCII)
_PAREN_PHONE = re.compile(r"\([0-9]{1,4}\)[ .-]?[0-9]{2,4}[ .-]?[0-9]{3,4}(?![0-9A-Za-z_])")
_DIGIT_CHARS = tuple("0123456789")
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_CARD_FIRST_DIGITS = frozenset("23456")  # Mastercard 2/5, Amex 3, Visa 4, Discover 6


def _luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _starts_word(match: re.Match[str]) -> bool:
    start = match.start()
    return start == 0 or match.string[start - 1] not in _WORD


def _replace_bearer(match: re.Match[str]) -> str:
    if not _starts_word(match):
        return match.group(0)
    return match.group(0)[:6] + " " + TOKEN


def _replace_vendor_key(match: re.Match[str]) -> str:
    if not _starts_word(match):
        return match.group(0)
    return TOKEN if match.group(0).startswith("eyJ") else API_KEY


def _replace_assigned(match: re.Match[str]) -> str:
    start = match.start()
    name = _SECRET_NAME.search(match.string, max(0, start - 24), start)
    if name is None:
        return match.group(0)
    begin = name.start()
    if begin and match.string[begin - 1].isalnum():
        return match.group(0)
    return match.group(0)[: match.start("secret") - start] + SECRET


def _replace_digits(match: re.Match[str]) -> str:
    text = match.group(0)
    start = match.start()
    if start:
        before = match.string[start - 1]
        if before in _WORD or before in "+.":
            return text
    digits = "".join(filter(str.isdigit, text))
    plain = text[0] != "+"
    if (
        plain
        and 13 <= len(digits) <= 19
        and digits[0] in _CARD_FIRST_DIGITS
        and _luhn_valid(digits)
    ):
        return CARD
    # A phone number has separators or a leading "+"; one dot makes it a decimal number,
    # four dotted groups an IPv4 address.
    if (
        9 <= len(digits) <= 15
        and (not plain or len(digits) != len(text))
        and text.count(".") != 1
        and not _IPV4.fullmatch(text)
    ):
        return PHONE
    return text


def _replace_paren_phone(match: re.Match[str]) -> str:
    digits = "".join(filter(str.isdigit, match.group(0)))
    return PHONE if 9 <= len(digits) <= 15 else match.group(0)


def _redact_emails(text: str) -> str:
    parts: list[str] = []
    done = 0
    at = text.find("@")
    while at != -1:
        local = _EMAIL_LOCAL_REVERSED.match(text[max(done, at - 64) : at][::-1])
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        if local is not None and domain is not None:
            begin = at - local.end()
            if begin == 0 or text[begin - 1] not in _WORD:
                parts.append(text[done:begin])
                parts.append(EMAIL)
                done = domain.end()
                at = text.find("@", done)
                continue
        at = text.find("@", at + 1)
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def redact_text(text: str) -> str:
    """`text` with secrets and personal data replaced by `[REDACTED:<KIND>]` placeholders."""
    for hint in _VENDOR_HINTS:
        if hint in text:
            text = _VENDOR_KEYS.sub(_replace_vendor_key, text)
            break
    lowered = text.lower()
    if "earer" in lowered:
        text = _BEARER.sub(_replace_bearer, text)
    for hint in _ASSIGNED_HINTS:
        if hint in lowered:
            text = _ASSIGNED.sub(_replace_assigned, text)
            break
    if "@" in text:
        text = _redact_emails(text)
    if sum(map(text.count, _DIGIT_CHARS)) >= 9:
        text = _DIGITS.sub(_replace_digits, text)
        if "(" in text:
            text = _PAREN_PHONE.sub(_replace_paren_phone, text)
    return text


def hash_text(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _keep(text: str) -> str | None:
    return text


def _drop(text: str) -> str | None:
    return None


ContentFilter = Callable[[str], "str | None"]

_FILTERS: dict[PrivacyPolicy, ContentFilter] = {
    PrivacyPolicy.FULL: _keep,
    PrivacyPolicy.REDACTED: redact_text,
    PrivacyPolicy.HASHED: hash_text,
    PrivacyPolicy.OFF: _drop,
}


def content_filter(policy: PrivacyPolicy) -> ContentFilter:
    """The function applying `policy` to one content value; it returns None to drop it."""
    return _FILTERS[policy]


_content_keys: dict[str, bool] = {}
_MAX_CACHED_KEYS = 65_536


def is_content(key: str) -> bool:
    """Whether span attribute `key` is prompt/completion content (cached per key)."""
    known = _content_keys.get(key)
    if known is None:
        known = is_content_attribute(key)
        if len(_content_keys) >= _MAX_CACHED_KEYS:
            _content_keys.clear()
        _content_keys[key] = known
    return known


def is_message_event(event_name: str) -> bool:
    """Whether a span event carries one GenAI message, so generic keys like `content` count."""
    return event_name.startswith(MESSAGE_EVENT_PREFIX)


def is_event_content(event_name: str, key: str) -> bool:
    """Whether attribute `key` of span event `event_name` is content."""
    if is_content(key):
        return True
    return key in MESSAGE_EVENT_CONTENT_ATTRIBUTES and is_message_event(event_name)


def filter_attributes(
    attributes: dict[str, str], policy: PrivacyPolicy, event_name: str | None = None
) -> dict[str, str]:
    """`attributes` with content values filtered by `policy` (a new dict only if changed).

    The normaliser filters content while decoding; this is the same rule for callers that
    already hold a decoded attribute map.
    """
    apply = content_filter(policy)
    out: dict[str, str] | None = None
    for key, value in attributes.items():
        content = is_content(key) if event_name is None else is_event_content(event_name, key)
        if not content:
            continue
        if out is None:
            out = dict(attributes)
        new = apply(value)
        if new is None:
            del out[key]
        else:
            out[key] = new
    return attributes if out is None else out
