"""llmtel's compiled hot path (Rust): see native/README.md."""

from llmtel_native._llmtel_native import *  # noqa: F403
