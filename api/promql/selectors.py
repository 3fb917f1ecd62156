"""Label matchers and which catalogue series they select, as SQL conditions.

Label values are compared in ClickHouse (RE2 regular expressions, fully anchored as in
Prometheus); metric names are chosen in Python from the fixed catalogue. A label a series
does not have has the empty value, as in Prometheus.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from api.promql.catalogue import METRICS, Metric
from api.promql.errors import BadData
from schema.clickhouse import Database

Op = Literal["=", "!=", "=~", "!~"]
NAME = "__name__"


@dataclass(frozen=True, slots=True)
class LabelMatcher:
    name: str
    op: Op
    value: str

    def matches(self, value: str) -> bool:
        """This matcher applied in Python (metric names, absent labels)."""
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        found = re.fullmatch(self.value, value) is not None
        return found if self.op == "=~" else not found


def check_regex(matcher: LabelMatcher) -> None:
    """Reject a regular expression Python cannot compile (ClickHouse would fail later)."""
    if matcher.op in ("=~", "!~"):
        try:
            re.compile(matcher.value)
        except re.error as exc:
            raise BadData(
                f"invalid regular expression in {matcher.name}{matcher.op}: {exc}"
            ) from exc


def selected(matchers: list[LabelMatcher]) -> list[Metric]:
    """Catalogue series whose name and absent labels satisfy `matchers`."""
    for matcher in matchers:
        check_regex(matcher)
    found = []
    for metric in METRICS:
        ok = True
        for matcher in matchers:
            if matcher.name == NAME:
                ok = matcher.matches(metric.name)
            elif matcher.name not in metric.labels:
                ok = matcher.matches("")
            if not ok:
                break
        if ok:
            found.append(metric)
    return found


def label_conditions(
    metric: Metric,
    matchers: list[LabelMatcher],
    params: dict[str, Any],
    columns: dict[str, str] | None = None,
) -> str:
    """SQL over the label columns of `metric`'s source; values go into `params`. With
    `columns` (label -> column): only the matchers of those labels, on those columns."""
    parts = []
    for matcher in matchers:
        if matcher.name == NAME or matcher.name not in metric.labels:
            continue
        if columns is not None and matcher.name not in columns:
            continue
        key = f"m{len(params)}"
        column = matcher.name if columns is None else columns[matcher.name]
        if matcher.op in ("=", "!="):
            params[key] = matcher.value
            parts.append(f"{column} {matcher.op} {{{key}:String}}")
        else:
            params[key] = f"^(?:{matcher.value})$"
            negate = "NOT " if matcher.op == "!~" else ""
            parts.append(f"{negate}match({column}, {{{key}:String}})")
    return " AND ".join(parts) or "1"


def tenant_condition(tenant: str | None, params: dict[str, Any]) -> str:
    """A tenant key's confinement, on the rollup column (uses the table's sort key)."""
    if tenant is None:
        return "1"
    params["scope_tenant"] = tenant
    return "TenantId = {scope_tenant:String}"


_REGEX_RESULTS: dict[tuple[str, str], bool] = {}
_REGEX_RESULTS_MAX = 10_000


def regex_matches(db: Database, pattern: str, values: Iterable[str]) -> dict[str, bool]:
    """Whether each of `values` matches `pattern` fully, as ClickHouse's RE2 says (the same
    test as `label_conditions`). Results are remembered (the function is pure), so the
    matchers a dashboard repeats cost no statement."""
    found: dict[str, bool] = {}
    missing = []
    for value in set(values):
        hit = _REGEX_RESULTS.get((pattern, value))
        if hit is None:
            missing.append(value)
        else:
            found[value] = hit
    if missing:
        rows = db.query(
            "SELECT v, match(v, {pattern:String}) FROM (SELECT arrayJoin({v:Array(String)}) AS v)",
            {"pattern": f"^(?:{pattern})$", "v": sorted(missing)},
        )
        if len(_REGEX_RESULTS) + len(rows) > _REGEX_RESULTS_MAX:
            _REGEX_RESULTS.clear()
        for value, hit in rows:
            found[str(value)] = _REGEX_RESULTS[(pattern, str(value))] = bool(hit)
    return found
