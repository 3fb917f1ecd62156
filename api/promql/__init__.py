"""PromQL over the ClickHouse rollups: parse (promql-parser), translate, evaluate, format.

Selectors and range functions (`rate`, `irate`, `increase`) run as ClickHouse SQL over the
per-minute rollups and come back as one value per series and step; the vector algebra on
top (aggregations, `topk`, `histogram_quantile`, binary operators) works on those step
values. Raw per-minute rows never leave ClickHouse. Semantics: docs/promql.md.
"""
