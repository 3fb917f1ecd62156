from tests.kafka.fixtures import (  # noqa: F401 - fixtures
    kafka_bootstrap,
    kafka_broker,
    make_topic,
    topic_prefix,
)
