"""OTLP receivers: decode, authenticate, validate, hand off. Knows nothing of what is downstream."""
