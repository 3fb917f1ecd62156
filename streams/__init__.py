"""Stream processing: pure processors, the in-process bus, the ClickHouse writer."""
