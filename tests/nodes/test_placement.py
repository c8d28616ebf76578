"""Where shards go, and how `feira status` shows it: the pure parts, without Ray."""

from __future__ import annotations

from typing import Any

from actors.client import SHARD_RESOURCE, shard_placement
from feira.cli import _status_text
from feira.cluster import CHANGE_HUB_NAME, _backlog, _singletons, by_node
from feira.settings import Settings


def test_shards_spread_and_only_over_shard_nodes_when_there_are_some() -> None:
    # One machine (`feira up`): no node advertises the resource, shards go anywhere.
    assert shard_placement({"CPU": 2.0, "memory": 1e9}) == {"scheduling_strategy": "SPREAD"}
    # A cluster whose workers advertise it: one unit per shard, so never on the head.
    assert shard_placement({"CPU": 6.0, SHARD_RESOURCE: 3000.0}) == {
        "scheduling_strategy": "SPREAD",
        "resources": {SHARD_RESOURCE: 1},
    }
    assert SHARD_RESOURCE == "feira_shard"  # the name cluster.yaml's workers advertise


def test_backlog_and_lag_come_from_what_the_report_has() -> None:
    assert _backlog({"kind": "cart", "carts": 10, "dirty": 3}) == {"backlog": 3}
    assert _backlog({"kind": "search-indexer", "pending": 7, "lag_s": 0.25}) == {
        "backlog": 7,
        "lag_s": 0.25,
    }
    assert _backlog({"kind": "cart", "dirty": 1, "checkpoint_lag_s": 0.04}) == {
        "backlog": 1,
        "lag_s": 0.04,
    }
    assert _backlog(
        {"kind": "order-processor", "outbox_backlog": 2, "outbox_oldest_age_s": 12.5}
    ) == {"backlog": 2, "lag_s": 12.5}
    assert _backlog({"kind": "pricing", "skus": 4}) == {}


NODES: list[dict[str, Any]] = [
    {"node_id": "b" * 56, "node_ip": "10.0.0.3", "alive": True, "head": False, "cpus": 1,
     "shard_capacity": 1000},
    {"node_id": "a" * 56, "node_ip": "10.0.0.1", "alive": True, "head": True, "cpus": 0,
     "shard_capacity": 0},
    {"node_id": "c" * 56, "node_ip": "10.0.0.4", "alive": False, "head": False, "cpus": 1,
     "shard_capacity": 1000},
]  # fmt: skip


def shard(name: str, node_id: str | None, **report: Any) -> dict[str, Any]:
    ip = next((n["node_ip"] for n in NODES if n["node_id"] == node_id), None)
    return {"name": name, "state": "ready", "node_id": node_id, "node_ip": ip, "restarts": 0,
            **report}  # fmt: skip


def test_status_groups_actors_by_node_head_first() -> None:
    shards = [
        shard("feira-cart-0", "b" * 56, kind="cart", carts=5, dirty=2, backlog=2),
        shard("feira-change-hub", "a" * 56, kind="change-hub"),
        {**shard("feira-cart-1", None), "state": "unavailable", "error": "restarting"},
    ]
    nodes = by_node(shards, NODES)
    # The dead node holds nothing and is left out; the head comes first; then the
    # workers; actors on no node last.
    assert [(n["node_id"], n["actors"]) for n in nodes] == [
        ("a" * 56, ["feira-change-hub"]),
        ("b" * 56, ["feira-cart-0"]),
        (None, ["feira-cart-1"]),
    ]
    text = _status_text(
        {
            "address": "10.0.0.1:6390",
            "applications": {
                "feira": {
                    "status": "RUNNING",
                    "deployments": {"bff": {"status": "HEALTHY", "replicas": {"RUNNING": 2}}},
                }
            },
            "nodes": nodes,
            "shards": shards,
        }
    )
    lines = text.splitlines()
    assert lines[0] == "Ray cluster 10.0.0.1:6390"
    head = lines.index(next(line for line in lines if line.startswith("node 10.0.0.1")))
    worker = lines.index(next(line for line in lines if line.startswith("node 10.0.0.3")))
    assert "head alive" in lines[head]
    assert "worker alive" in lines[worker]
    assert "shard capacity 1000" in lines[worker]
    assert lines[worker + 1].split()[:2] == ["feira-cart-0", "ready"]
    assert "backlog 2" in lines[worker + 1]
    assert "'carts': 5" in lines[worker + 1]
    assert "on no node" in text
    assert "feira-cart-1" in text.split("on no node")[1]


def test_the_change_hub_is_expected_only_without_redis(tmp_path: Any) -> None:
    embedded = Settings(data_dir=tmp_path)
    on_redis = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/0")
    assert CHANGE_HUB_NAME in _singletons(embedded)
    assert CHANGE_HUB_NAME not in _singletons(on_redis)
    assert len(_singletons(on_redis)) == len(_singletons(embedded)) - 1
