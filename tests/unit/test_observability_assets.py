"""The Grafana dashboard and docs/metrics.md against the metric catalog."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from actors.commerce_metrics import EXPORTED_SERIES, METRICS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "feira.json"
DOCS = ROOT / "docs" / "metrics.md"

_SERIES = re.compile(r"\b(?:ray_)?feira_[a-z0-9_]+")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
_LABELS = {f"{m.exported}": set(m.labels) for m in METRICS} | {
    s: set(m.labels) | ({"le"} if s.endswith("_bucket") else set())
    for m in METRICS
    for s in m.series
}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
    ]


def test_the_dashboard_is_valid_and_uses_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    ref = "${" + variable["name"] + "}"
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == ref, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == ref


def test_every_expression_uses_only_exported_series_and_their_labels() -> None:
    exprs = _exprs(json.loads(DASHBOARD.read_text()))
    assert len(exprs) >= 20
    for title, expr in exprs:
        series = _SERIES.findall(expr)
        assert series, f"{title}: {expr} uses no Feira metric"
        unknown = [s for s in series if s not in EXPORTED_SERIES]
        assert not unknown, f"{title}: {unknown} are not exported (see METRICS)"
        allowed = set().union(*(_LABELS[s] for s in series))
        used = {label.strip() for group in _BY.findall(expr) for label in group.split(",")}
        used |= set(_MATCHER.findall(expr))
        used.discard("")
        assert used <= allowed, f"{title}: labels {sorted(used - allowed)} not on {series}"


def test_the_dashboard_has_the_panels_ops_need() -> None:
    exprs = " ".join(expr for _, expr in _exprs(json.loads(DASHBOARD.read_text())))
    for needed in [
        "histogram_quantile(0.95, sum by (le, route) (rate(ray_feira_http_request_duration",
        "histogram_quantile(0.99, sum by (le, route) (rate(ray_feira_http_request_duration",
        "sum by (code) (rate(ray_feira_http_errors_total",
        "ray_feira_shard_queue_depth",
        "rate(ray_feira_shard_ops_total",
        "ray_feira_cart_checkpoint_lag_seconds",
        "ray_feira_outbox_oldest_event_age_seconds",
        "ray_feira_outbox_backlog_events",
        "ray_feira_cache_hits_total",
        "ray_feira_cache_misses_total",
        "ray_feira_search_index_lag_seconds",
        "60 * sum(rate(ray_feira_orders_placed_total",
        "/ sum(increase(ray_feira_carts_created_total",
        "histogram_quantile(0.95, sum by (le) (rate(ray_feira_checkout_duration_seconds_bucket",
    ]:
        assert needed in exprs, needed


def test_the_docs_describe_every_metric() -> None:
    text = DOCS.read_text()
    missing = [m.exported for m in METRICS if f"`{m.exported}`" not in text]
    assert not missing, f"docs/metrics.md lacks {missing}"
    documented = set(re.findall(r"`(ray_feira_[a-z0-9_]+)`", text))
    known = EXPORTED_SERIES | {m.exported for m in METRICS}
    assert documented <= known, documented - known
