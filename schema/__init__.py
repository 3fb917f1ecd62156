"""Data contracts shared by every llmtel component: ClickHouse DDL, bus/Kafka messages, models."""
