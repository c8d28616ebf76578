"""The memory benchmark's arithmetic, workload and report, without Ray."""

from __future__ import annotations

import json
import pickle
import random

import pytest

from actors.domain.cart import check_cart_id
from benchmarks.memory.figures import (
    BOUNDS,
    CART_GOAL_BYTES,
    LINES_PER_CART,
    PER_PRODUCTS,
    SECTION_HEADING,
    SKU_GOAL_BYTES,
    CacheFigure,
    Report,
    Sample,
    ShardFigure,
    TracedFigure,
    fmt_bytes,
    markdown_section,
    parse_status,
    per_item,
    verdict,
)
from benchmarks.memory.workload import cart_ops, cart_plan, demo_stock, wire_batches
from feira.settings import Settings

STATUS = """Name:\tray::CartShard
VmPeak:\t  400000 kB
VmRSS:\t  150000 kB
RssAnon:\t  120000 kB
RssFile:\t   30000 kB
Threads:\t 42
VmSwap:\t       0 kB
"""


def test_status_lines_are_read_in_bytes() -> None:
    parsed = parse_status(STATUS)
    assert parsed["VmRSS"] == 150_000 * 1024
    assert parsed["RssAnon"] == 120_000 * 1024
    assert parsed["VmSwap"] == 0
    assert "Threads" not in parsed
    assert "Name" not in parsed


def test_per_item_is_growth_over_count() -> None:
    assert per_item(1_000, 201_000, 100) == 2_000
    assert per_item(5_000, 4_000, 10) == -100
    assert per_item(0, 10, 0) == 0.0


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0 B"),
        (812, "812 B"),
        (1023.4, "1,023 B"),
        (1023.6, "1.00 KiB"),
        (1024, "1.00 KiB"),
        (1_500, "1.46 KiB"),
        (150 * 1024, "150.0 KiB"),
        (143.2 * 1024**2, "143.2 MiB"),
        (3 * 1024**3, "3.00 GiB"),
        (5_000 * 1024**3, "5,000.0 GiB"),
        (-2048, "-2.00 KiB"),
    ],
)
def test_bytes_read_like_a_person_writes_them(value: float, text: str) -> None:
    assert fmt_bytes(value) == text


def test_a_goal_is_met_at_or_under_it() -> None:
    assert verdict(2048, CART_GOAL_BYTES) == "**met**"
    assert verdict(2049, CART_GOAL_BYTES) == "**missed**"
    assert verdict(299.9, SKU_GOAL_BYTES) == "**met**"


def test_a_cache_figure_scales_per_entry_to_products_and_to_its_bound() -> None:
    price = CacheFigure("price", "price_cache_size", 100_000, 2_000, 1_000_000, 2.0)
    assert price.per_entry == 500
    assert price.per_products == 500 * 2 * PER_PRODUCTS
    assert price.at_default_bound == 500 * 100_000
    related = CacheFigure("recommendations", "product_cache_size", 20_000, 40, 400_000, 0.0, 40)
    assert related.at_default_bound == 10_000 * 40  # never more entries than categories
    assert CacheFigure("x", "y", 10, 0, 0, 1.0).per_entry == 0.0


def test_every_bound_named_as_a_setting_is_one_with_that_default() -> None:
    fields = Settings.model_fields
    for bound in BOUNDS:
        if bound.setting is None:
            assert bound.default is None, bound
            continue
        assert bound.setting in fields, bound
        assert fields[bound.setting].default == bound.default, bound


def test_a_cart_gets_three_distinct_skus_of_one_to_three_units() -> None:
    skus = [f"SKU-{i:07d}-1" for i in range(10)]
    rnd = random.Random(1)
    for _ in range(50):
        plan = cart_plan(rnd, skus)
        assert len(plan) == LINES_PER_CART
        assert len({sku for sku, _ in plan}) == LINES_PER_CART
        assert all(sku in skus and 1 <= qty <= 3 for sku, qty in plan)


def test_cart_operations_are_what_the_bff_sends() -> None:
    skus = [f"SKU-{i:07d}-1" for i in range(10)]
    ops = cart_ops(random.Random(2), skus)
    assert [name for name, _ in ops] == ["create", "add", "add", "add"]
    (_, (create_op, cart_id, customer)), *adds = ops
    check_cart_id(cart_id)
    assert customer is None
    op_ids = [create_op] + [args[0] for _, args in adds]
    assert len(set(op_ids)) == len(op_ids)
    for _, (_, add_cart, sku, quantity, caller) in adds:
        assert add_cart == cart_id
        assert add_cart is not cart_id  # parsed per request, not one shared object
        assert sku in skus
        assert 1 <= quantity <= 3
        assert caller is None


def test_wire_batches_split_and_come_back_through_pickle() -> None:
    ops = [("add", (f"op-{i}", "c" * 24, "SKU", 1, None)) for i in range(1_100)]
    batches = list(wire_batches(ops, 512))
    assert [len(b) for b in batches] == [512, 512, 76]
    assert [op for b in batches for op in b] == ops
    assert batches[0][0] is not ops[0]


def test_demo_stock_gives_exactly_the_count_asked() -> None:
    levels = list(demo_stock(25, seed=7))
    assert len(levels) == 25
    assert len({sku for sku, _ in levels}) == 25
    assert all(sku.startswith("SKU-") and on_hand >= 0 for sku, on_hand in levels)


def sample(rss_mib: float, items: int) -> Sample:
    rss = int(rss_mib * 1024**2)
    return Sample(pid=1, rss=rss, rss_anon=rss, rss_trimmed=rss, items=items, op_log=items)


def report() -> Report:
    r = Report(
        machine={"nproc": 2, "cpu_model": "test", "memory_gib": 8, "python": "3.11", "ray": "x"},
        command=".venv/bin/python -m benchmarks.memory",
        started="2025-01-01 00:00 UTC",
        config={"op_log_size": 100_000, "products": 1_000},
    )
    r.shards = [
        ShardFigure("cart", 1_000, 2.0, sample(100, 0), sample(101.5, 1_000)),
        ShardFigure("inventory", 1_000, 2.0, sample(100, 0), sample(100.5, 1_000)),
    ]
    r.traced = [TracedFigure("CartService", 1_000, 1_000_000, 4_000, 800_000)]
    r.caches = [CacheFigure("price", "price_cache_size", 100_000, 2_000, 1_000_000, 2.0)]
    return r


def test_the_section_shows_each_figure_against_its_goal() -> None:
    text = markdown_section(report())
    assert text.startswith(SECTION_HEADING + "\n")
    cart_row = next(line for line in text.splitlines() if line.startswith("| cart shard"))
    assert "**1.54 KiB**" in cart_row
    assert "**met**" in cart_row
    stock_row = next(line for line in text.splitlines() if line.startswith("| inventory"))
    assert "**524 B**" in stock_row
    assert "**missed**" in stock_row
    assert "4,000 x 200 B = 781.2 KiB" in text
    assert "`price_cache_size`" in text
    for bound in BOUNDS:
        assert bound.where in text


def test_the_json_report_carries_the_derived_figures() -> None:
    data = json.loads(json.dumps(report().to_json()))
    assert data["goals"] == {"cart_bytes": CART_GOAL_BYTES, "sku_bytes": SKU_GOAL_BYTES}
    assert data["shards"][0]["per_item"] == pytest.approx(1.5 * 1024**2 / 1_000, abs=0.1)
    assert data["shards"][0]["after"]["items"] == 1_000
    assert data["in_process"][0]["op_log_per_entry"] == 200
    assert data["caches"][0]["per_products"] == 500 * 2 * PER_PRODUCTS
    assert len(data["bounds"]) == len(BOUNDS)


def test_a_sample_comes_from_the_probe_of_an_actor() -> None:
    probe = {"pid": 7, "status": STATUS, "status_trimmed": STATUS, "items": 3, "op_log": 12}
    s = Sample.of(pickle.loads(pickle.dumps(probe)))
    assert (s.pid, s.rss, s.rss_anon, s.items, s.op_log) == (
        7,
        150_000 * 1024,
        120_000 * 1024,
        3,
        12,
    )
