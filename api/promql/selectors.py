"""Label matchers and which catalogue series they select, as SQL conditions.

Label values are compared in ClickHouse (RE2 regular expressions, fully anchored as in
Prometheus); metric names are chosen in Python from the fixed catalogue. A label a series
does not have has the empty value, as in Prometheus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from api.promql.catalogue import METRICS, Metric
from api.promql.errors import BadData

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


def label_conditions(metric: Metric, matchers: list[LabelMatcher], params: dict[str, Any]) -> str:
    """SQL over the label columns of `metric`'s source; values go into `params`."""
    parts = ["1"]
    for matcher in matchers:
        if matcher.name == NAME or matcher.name not in metric.labels:
            continue
        key = f"m{len(params)}"
        column = matcher.name
        if matcher.op in ("=", "!="):
            params[key] = matcher.value
            parts.append(f"{column} {matcher.op} {{{key}:String}}")
        else:
            params[key] = f"^(?:{matcher.value})$"
            negate = "NOT " if matcher.op == "!~" else ""
            parts.append(f"{negate}match({column}, {{{key}:String}})")
    return " AND ".join(parts)


def tenant_condition(tenant: str | None, params: dict[str, Any]) -> str:
    """A tenant key's confinement, on the rollup column (uses the table's sort key)."""
    if tenant is None:
        return "1"
    params["scope_tenant"] = tenant
    return "TenantId = {scope_tenant:String}"
