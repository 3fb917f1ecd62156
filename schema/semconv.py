"""Which span attribute names mean what: the LLM semantic conventions llmtel understands.

Data, not logic. Normalisers turn this into lookup tables once at import time; nothing here is
evaluated per span.

Families recognised, in precedence order when several name the same thing on one span:

1. OpenTelemetry GenAI semantic conventions, current names (`gen_ai.provider.name`,
   `gen_ai.usage.cache_read.input_tokens`, ...; now maintained in
   open-telemetry/semantic-conventions-genai).
2. Older GenAI names (`gen_ai.system`, `gen_ai.usage.prompt_tokens`, ...) and the `gen_ai.*`
   extensions OpenLLMetry/Traceloop and OpenLIT emit (`gen_ai.usage.cache_read_input_tokens`,
   `gen_ai.usage.reasoning_tokens`, `gen_ai.usage.total_tokens`, `gen_ai.usage.cost`).
3. OpenInference (Arize Phoenix): `llm.model_name`, `llm.token_count.*`, `llm.cost.total`.
4. Others: OpenLLMetry's `llm.*` names and the plain `llm.*` names from tutorials.

Token semantics follow the GenAI conventions: input tokens INCLUDE cache-read and cache-write
tokens, output tokens INCLUDE reasoning tokens. When a span reports only a total, input and
output stay 0 (we do not split a total by guessing) and the raw attribute is kept.
"""

from __future__ import annotations

from typing import Final

# --- typed LLM fields ("slots") -------------------------------------------------------------

PROVIDER: Final = 0
OPERATION: Final = 1
REQUEST_MODEL: Final = 2
RESPONSE_MODEL: Final = 3
INPUT_TOKENS: Final = 4
OUTPUT_TOKENS: Final = 5
TOTAL_TOKENS: Final = 6
CACHE_READ_TOKENS: Final = 7
CACHE_WRITE_TOKENS: Final = 8
REASONING_TOKENS: Final = 9
TIME_TO_FIRST_TOKEN: Final = 10
COST_USD: Final = 11
SLOT_COUNT: Final = 12

TOKEN_SLOTS: Final = frozenset(
    {
        INPUT_TOKENS,
        OUTPUT_TOKENS,
        TOTAL_TOKENS,
        CACHE_READ_TOKENS,
        CACHE_WRITE_TOKENS,
        REASONING_TOKENS,
    }
)

# Attribute names per slot, highest precedence first.
SLOT_ATTRIBUTES: Final[dict[int, tuple[str, ...]]] = {
    PROVIDER: (
        "gen_ai.provider.name",  # GenAI current
        "gen_ai.system",  # GenAI older, OpenLLMetry, OpenLIT
        "llm.provider",  # OpenInference (hosting provider) and tutorials
        "llm.system",  # OpenInference (model family)
    ),
    OPERATION: (
        "gen_ai.operation.name",  # GenAI
        "llm.request.type",  # OpenLLMetry ("chat", "completion", "embedding", ...)
    ),
    REQUEST_MODEL: (
        "gen_ai.request.model",  # GenAI
        "llm.request.model_name",  # OpenInference (newer, explicit)
        # Ambiguous single-model names: counted as the model the application asked for.
        "llm.model_name",  # OpenInference
        "llm.model",  # tutorials
    ),
    RESPONSE_MODEL: (
        "gen_ai.response.model",  # GenAI
        "llm.response.model_name",  # OpenInference (newer, explicit)
        "llm.response.model",  # OpenLLMetry (old llm.* prefix)
    ),
    INPUT_TOKENS: (
        "gen_ai.usage.input_tokens",  # GenAI current
        "gen_ai.usage.prompt_tokens",  # GenAI older, OpenLLMetry
        "llm.token_count.prompt",  # OpenInference
        "llm.usage.prompt_tokens",  # OpenLLMetry (old llm.* prefix)
        "llm.tokens.input",  # tutorials
        "llm.input_tokens",  # tutorials
    ),
    OUTPUT_TOKENS: (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
        "llm.usage.completion_tokens",
        "llm.tokens.output",
        "llm.output_tokens",
    ),
    TOTAL_TOKENS: (
        "gen_ai.usage.total_tokens",  # OpenLLMetry, OpenLIT (not in GenAI semconv)
        "llm.token_count.total",  # OpenInference
        "llm.usage.total_tokens",  # OpenLLMetry (old llm.* prefix)
        "llm.tokens.total",  # tutorials
        "llm.total_tokens",  # tutorials
    ),
    CACHE_READ_TOKENS: (
        "gen_ai.usage.cache_read.input_tokens",  # GenAI current
        "gen_ai.usage.cache_read_input_tokens",  # OpenLLMetry
        "llm.token_count.prompt_details.cache_read",  # OpenInference
        "llm.usage.cache_read_input_tokens",  # OpenLLMetry (old llm.* prefix)
        "llm.tokens.cache_read",  # tutorials
    ),
    CACHE_WRITE_TOKENS: (
        "gen_ai.usage.cache_creation.input_tokens",  # GenAI current
        "gen_ai.usage.cache_creation_input_tokens",  # OpenLLMetry
        "llm.token_count.prompt_details.cache_write",  # OpenInference
        "llm.usage.cache_creation_input_tokens",  # OpenLLMetry (old llm.* prefix)
    ),
    REASONING_TOKENS: (
        "gen_ai.usage.reasoning.output_tokens",  # GenAI current
        "gen_ai.usage.reasoning_tokens",  # OpenLLMetry, OpenLIT
        "llm.token_count.completion_details.reasoning",  # OpenInference
        "llm.usage.reasoning_tokens",  # OpenLLMetry (old llm.* prefix)
        "llm.tokens.reasoning",  # tutorials
    ),
    TIME_TO_FIRST_TOKEN: (
        "gen_ai.response.time_to_first_chunk",  # GenAI current, seconds
        "gen_ai.server.time_to_first_token",  # OpenLIT attribute (GenAI metric name), seconds
        "llm.latency.ttft_ms",  # tutorials, milliseconds
    ),
    COST_USD: (
        "gen_ai.usage.cost",  # OpenLIT, Langfuse (USD; not in GenAI semconv)
        "llm.cost.total",  # OpenInference (USD)
        "llm.cost_usd",  # tutorials
        "llm.cost.estimated",  # tutorials
    ),
}

# Multiply a time-to-first-token attribute by this to get milliseconds.
TTFT_TO_MS: Final[dict[str, float]] = {
    "gen_ai.response.time_to_first_chunk": 1000.0,
    "gen_ai.server.time_to_first_token": 1000.0,
    "llm.latency.ttft_ms": 1.0,
}

# --- prompt and completion content ---------------------------------------------------------

# Attributes holding prompt/completion content, stored according to the tenant's privacy
# policy. A key is content when it equals one of these or starts with one followed by ".".
CONTENT_ATTRIBUTES: Final[tuple[str, ...]] = (
    # GenAI current
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.retrieval.query.text",
    "gen_ai.retrieval.documents",
    # GenAI older / OpenLLMetry indexed form (gen_ai.prompt.0.content, ...) / OpenLIT
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.content.revised_prompt",
    # OpenInference
    "input.value",
    "output.value",
    "llm.input_messages",
    "llm.output_messages",
    "llm.prompts",
    "llm.choices",
    "llm.prompt_template.variables",
    # OpenLLMetry (old llm.* prefix) and Traceloop workflow entities
    "llm.completions",
    "llm.content.completion.chunk",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "traceloop.prompt.template_variables",
)

# Keys that fall under a content prefix but are identifiers, not content.
NOT_CONTENT_ATTRIBUTES: Final = frozenset({"gen_ai.prompt.name"})

# Span events that carry one message each (GenAI per-message events as some SDKs record them
# on spans); in those, these generic attribute names are content too.
MESSAGE_EVENT_PREFIX: Final = "gen_ai."
MESSAGE_EVENT_CONTENT_ATTRIBUTES: Final = frozenset(
    {"content", "message", "body", "gen_ai.event.content", "gen_ai.message.content"}
)

# --- providers -----------------------------------------------------------------------------

# Provider names as instrumentations report them (lowercased) -> genai-prices provider id.
# Names not listed are tried as genai-prices ids as-is; unknown ones price by model alone.
PROVIDER_PRICE_IDS: Final[dict[str, str]] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "aws_bedrock": "aws",
    "bedrock": "aws",
    "aws": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.openai": "azure",  # OpenLLMetry
    "azure": "azure",
    "azure_openai": "azure",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "gemini": "google",
    "google": "google",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "mistral": "mistral",
    "perplexity": "perplexity",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "together_ai": "together",
    "together": "together",
    "fireworks": "fireworks",
    "fireworks_ai": "fireworks",
    "openrouter": "openrouter",
    "cerebras": "cerebras",
    "moonshot": "moonshotai",
    "moonshotai": "moonshotai",
}

# --- core span fields, as the OpenTelemetry Collector's ClickHouse exporter writes them ------

# pdata SpanKind.String(), indexed by the OTLP enum value.
SPAN_KIND_NAMES: Final = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
# pdata StatusCode.String(), indexed by the OTLP enum value.
STATUS_CODE_NAMES: Final = ("Unset", "Ok", "Error")
SERVICE_NAME: Final = "service.name"


def is_content_attribute(key: str) -> bool:
    """Whether `key` holds prompt/completion content (callers cache the answer per key)."""
    if key in NOT_CONTENT_ATTRIBUTES:
        return False
    for name in CONTENT_ATTRIBUTES:
        if key == name or (key.startswith(name) and key[len(name)] == "."):
            return True
    return False
