"""Deterministic demo catalog: products, prices and stock for local runs and benchmarks.

Everything derives from one ``random.Random(seed)`` stream consumed in index order, so
the same seed gives byte-identical output, and a shorter run is a prefix of a longer one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import TypeVar

from tqdm import tqdm

from storage.interfaces import CatalogStore, PriceStore, StockStore
from storage.records import PriceRecord, ProductDoc, StockRecord

T = TypeVar("T")

MIN_PRICE = 199
MAX_PRICE = 99_999
MAX_ON_HAND = 500


@dataclass(frozen=True, slots=True)
class _Leaf:
    path: str
    nouns: tuple[str, ...]
    colors: tuple[str, ...]
    sizes: tuple[str, ...]
    materials: tuple[str, ...]
    price_band: tuple[int, int]  # minor units, inclusive
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()  # category-specific attributes


_NEUTRAL = ("black", "white", "grey", "silver")
_BRIGHT = ("red", "blue", "green", "yellow", "orange", "purple")
_EARTH = ("beige", "brown", "olive", "sand", "terracotta")
_APPAREL = ("XS", "S", "M", "L", "XL")
_SHOES = ("38", "39", "40", "41", "42", "43", "44", "45")
_ONE = ("one size",)

# 8 top-level categories, 40 leaves. Order matters: the generator indexes into it.
_TREE: tuple[_Leaf, ...] = (
    _Leaf(
        "home/kitchen/kettles",
        ("Kettle", "Electric Kettle"),
        _NEUTRAL + _BRIGHT,
        ("1.0 l", "1.5 l", "1.7 l"),
        ("stainless steel", "glass", "plastic"),
        (1999, 12999),
        (("wattage", ("1800 W", "2200 W", "3000 W")),),
    ),
    _Leaf(
        "home/kitchen/cookware",
        ("Frying Pan", "Saucepan", "Stock Pot", "Wok"),
        _NEUTRAL,
        ("20 cm", "24 cm", "28 cm"),
        ("cast iron", "stainless steel", "aluminium"),
        (1499, 24999),
        (("induction", ("yes", "no")),),
    ),
    _Leaf(
        "home/kitchen/knives",
        ("Chef Knife", "Paring Knife", "Bread Knife"),
        _NEUTRAL,
        ("9 cm", "15 cm", "20 cm"),
        ("carbon steel", "stainless steel", "ceramic"),
        (999, 19999),
    ),
    _Leaf(
        "home/furniture/chairs",
        ("Chair", "Stool", "Armchair"),
        _NEUTRAL + _EARTH,
        _ONE,
        ("oak", "beech", "walnut", "steel"),
        (2999, 59999),
        (("assembly", ("required", "not required")),),
    ),
    _Leaf(
        "home/furniture/tables",
        ("Dining Table", "Side Table", "Desk"),
        _EARTH,
        ("small", "medium", "large"),
        ("oak", "pine", "walnut", "glass"),
        (4999, 99999),
    ),
    _Leaf(
        "home/lighting/lamps",
        ("Table Lamp", "Floor Lamp", "Pendant Lamp"),
        _NEUTRAL + _EARTH,
        _ONE,
        ("brass", "linen", "glass", "steel"),
        (1999, 29999),
        (("bulb", ("E14", "E27", "GU10")),),
    ),
    _Leaf(
        "home/textiles/towels",
        ("Bath Towel", "Hand Towel", "Beach Towel"),
        _BRIGHT + _EARTH,
        ("30x50", "50x100", "70x140"),
        ("cotton", "linen", "bamboo"),
        (499, 4999),
        (("weight_gsm", ("400", "500", "600")),),
    ),
    _Leaf(
        "garden/tools",
        ("Spade", "Rake", "Pruner", "Trowel"),
        ("green", "black", "orange"),
        _ONE,
        ("steel", "ash wood", "fibreglass"),
        (799, 6999),
    ),
    _Leaf(
        "garden/furniture",
        ("Garden Bench", "Lounger", "Parasol"),
        (*_EARTH, "white"),
        _ONE,
        ("teak", "acacia", "aluminium", "rattan"),
        (4999, 79999),
        (("weatherproof", ("yes", "no")),),
    ),
    _Leaf(
        "garden/planters",
        ("Planter", "Flower Pot", "Window Box"),
        _EARTH + _NEUTRAL,
        ("small", "medium", "large"),
        ("terracotta", "ceramic", "zinc", "recycled plastic"),
        (499, 9999),
    ),
    _Leaf(
        "garden/watering",
        ("Garden Hose", "Watering Can", "Sprinkler"),
        ("green", "grey"),
        ("10 m", "20 m", "30 m"),
        ("PVC", "rubber", "galvanised steel"),
        (799, 8999),
    ),
    _Leaf(
        "garden/grills",
        ("Charcoal Grill", "Gas Grill", "Pizza Oven"),
        _NEUTRAL,
        ("compact", "family"),
        ("enamelled steel", "stainless steel", "cast iron"),
        (9999, 99999),
        (("fuel", ("charcoal", "gas", "wood pellets")),),
    ),
    _Leaf(
        "electronics/audio/headphones",
        ("Headphones", "Earbuds"),
        _NEUTRAL + _BRIGHT,
        _ONE,
        ("plastic", "aluminium"),
        (1999, 39999),
        (
            ("connectivity", ("bluetooth", "wired", "bluetooth + wired")),
            ("noise_cancelling", ("yes", "no")),
        ),
    ),
    _Leaf(
        "electronics/audio/speakers",
        ("Speaker", "Soundbar"),
        _NEUTRAL,
        _ONE,
        ("fabric", "aluminium", "wood"),
        (2999, 69999),
        (("connectivity", ("bluetooth", "wifi", "bluetooth + wifi")),),
    ),
    _Leaf(
        "electronics/computers/laptops",
        ("Laptop", "Notebook PC"),
        ("silver", "grey"),
        ("13 in", "14 in", "16 in"),
        ("aluminium", "magnesium"),
        (49999, 99999),
        (("ram", ("8 GB", "16 GB", "32 GB")), ("storage", ("256 GB", "512 GB", "1 TB"))),
    ),
    _Leaf(
        "electronics/computers/keyboards",
        ("Keyboard", "Mechanical Keyboard"),
        _NEUTRAL,
        ("compact", "full size"),
        ("plastic", "aluminium"),
        (2499, 19999),
        (("layout", ("US", "UK", "DE", "FR")),),
    ),
    _Leaf(
        "electronics/phones/cases",
        ("Phone Case", "Folio Case"),
        _NEUTRAL + _BRIGHT,
        ("6.1 in", "6.7 in"),
        ("silicone", "leather", "TPU"),
        (999, 4999),
    ),
    _Leaf(
        "electronics/phones/chargers",
        ("Charger", "Power Bank", "Wireless Charger"),
        ("black", "white"),
        _ONE,
        ("plastic", "aluminium"),
        (1499, 7999),
        (("output", ("20 W", "30 W", "65 W")),),
    ),
    _Leaf(
        "fashion/men/shirts",
        ("Shirt", "Polo Shirt", "Oxford Shirt"),
        _NEUTRAL + _EARTH,
        _APPAREL,
        ("cotton", "linen", "wool blend"),
        (1999, 12999),
        (("fit", ("slim", "regular")),),
    ),
    _Leaf(
        "fashion/men/shoes",
        ("Sneaker", "Derby Shoe", "Boot"),
        _NEUTRAL + _EARTH,
        _SHOES,
        ("leather", "suede", "canvas"),
        (4999, 24999),
    ),
    _Leaf(
        "fashion/women/dresses",
        ("Dress", "Wrap Dress", "Shirt Dress"),
        _BRIGHT + _EARTH,
        _APPAREL,
        ("cotton", "viscose", "silk"),
        (2999, 19999),
        (("length", ("mini", "midi", "maxi")),),
    ),
    _Leaf(
        "fashion/women/shoes",
        ("Sneaker", "Loafer", "Ankle Boot"),
        _NEUTRAL + _EARTH,
        _SHOES,
        ("leather", "suede", "canvas"),
        (4999, 24999),
    ),
    _Leaf(
        "fashion/accessories/bags",
        ("Tote Bag", "Backpack", "Crossbody Bag"),
        _NEUTRAL + _EARTH,
        _ONE,
        ("leather", "canvas", "nylon"),
        (2499, 49999),
        (("volume", ("8 l", "15 l", "25 l")),),
    ),
    _Leaf(
        "fashion/accessories/hats",
        ("Beanie", "Cap", "Bucket Hat"),
        _NEUTRAL + _BRIGHT,
        ("S/M", "L/XL"),
        ("wool", "cotton", "cashmere"),
        (999, 6999),
    ),
    _Leaf(
        "sports/cycling/helmets",
        ("Cycling Helmet", "MTB Helmet"),
        _NEUTRAL + _BRIGHT,
        ("S", "M", "L"),
        ("EPS", "polycarbonate"),
        (3999, 24999),
        (("certification", ("EN 1078", "CPSC")),),
    ),
    _Leaf(
        "sports/cycling/lights",
        ("Bike Light Set", "Rear Light", "Headlight"),
        _NEUTRAL,
        _ONE,
        ("aluminium", "plastic"),
        (999, 9999),
        (("lumen", ("100", "400", "1000")),),
    ),
    _Leaf(
        "sports/running/shoes",
        ("Running Shoe", "Trail Shoe"),
        _NEUTRAL + _BRIGHT,
        _SHOES,
        ("mesh", "knit"),
        (5999, 19999),
        (("drop_mm", ("4", "8", "10")),),
    ),
    _Leaf(
        "sports/fitness/yoga-mats",
        ("Yoga Mat", "Exercise Mat"),
        _BRIGHT + _EARTH,
        ("4 mm", "6 mm"),
        ("natural rubber", "TPE", "cork"),
        (1499, 8999),
    ),
    _Leaf(
        "sports/fitness/dumbbells",
        ("Dumbbell", "Kettlebell"),
        ("black", "grey"),
        ("2 kg", "5 kg", "10 kg", "16 kg"),
        ("cast iron", "neoprene", "rubber"),
        (999, 9999),
    ),
    _Leaf(
        "toys/building",
        ("Building Set", "Block Set"),
        _BRIGHT,
        _ONE,
        ("plastic", "wood"),
        (999, 19999),
        (("age", ("3+", "6+", "9+")), ("pieces", ("120", "450", "1200"))),
    ),
    _Leaf(
        "toys/puzzles",
        ("Jigsaw Puzzle", "3D Puzzle"),
        _BRIGHT,
        ("500", "1000", "2000"),
        ("cardboard", "wood"),
        (799, 4999),
        (("age", ("6+", "12+")),),
    ),
    _Leaf(
        "toys/outdoor",
        ("Kite", "Football", "Frisbee"),
        _BRIGHT,
        _ONE,
        ("nylon", "rubber", "plastic"),
        (499, 4999),
        (("age", ("3+", "6+", "9+")),),
    ),
    _Leaf(
        "toys/plush",
        ("Plush Bear", "Plush Fox", "Plush Rabbit"),
        (*_EARTH, "white"),
        ("20 cm", "35 cm"),
        ("polyester", "organic cotton"),
        (999, 3999),
        (("age", ("0+", "3+")),),
    ),
    _Leaf(
        "beauty/skincare",
        ("Face Cream", "Serum", "Cleanser"),
        ("white",),
        ("30 ml", "50 ml", "100 ml"),
        ("glass jar", "tube", "pump bottle"),
        (999, 8999),
        (("skin_type", ("dry", "oily", "combination", "all")),),
    ),
    _Leaf(
        "beauty/haircare",
        ("Shampoo", "Conditioner", "Hair Dryer"),
        ("white", "black"),
        ("250 ml", "500 ml"),
        ("bottle", "refill pouch"),
        (499, 14999),
        (("hair_type", ("curly", "fine", "all")),),
    ),
    _Leaf(
        "beauty/fragrance",
        ("Eau de Parfum", "Eau de Toilette"),
        ("clear", "amber"),
        ("30 ml", "50 ml", "100 ml"),
        ("glass",),
        (2999, 19999),
        (("notes", ("citrus", "woody", "floral", "spicy")),),
    ),
    _Leaf(
        "office/stationery/notebooks",
        ("Notebook", "Journal", "Sketchbook"),
        _NEUTRAL + _BRIGHT,
        ("A5", "A4"),
        ("recycled paper", "leather cover"),
        (299, 2999),
        (("ruling", ("lined", "dotted", "blank")),),
    ),
    _Leaf(
        "office/stationery/pens",
        ("Fountain Pen", "Ballpoint Pen", "Fineliner Set"),
        _NEUTRAL + _BRIGHT,
        _ONE,
        ("brass", "plastic", "aluminium"),
        (199, 9999),
    ),
    _Leaf(
        "office/furniture/chairs",
        ("Office Chair", "Task Chair"),
        _NEUTRAL,
        _ONE,
        ("mesh", "fabric", "leather"),
        (9999, 89999),
        (("adjustable_arms", ("yes", "no")),),
    ),
    _Leaf(
        "office/storage",
        ("Bookshelf", "Filing Cabinet", "Storage Box"),
        _NEUTRAL + _EARTH,
        ("small", "large"),
        ("steel", "birch plywood", "cardboard"),
        (999, 29999),
    ),
)

_BRANDS = (
    "Acme",
    "Nordvik",
    "Brightline",
    "Hollow Oak",
    "Kestrel",
    "Lumen & Co",
    "Marlow",
    "Northwind",
    "Orbit",
    "Pellucid",
    "Quayside",
    "Redfern",
    "Solano",
    "Tidewater",
    "Umber",
    "Vantage",
    "Westbrook",
    "Yarrow",
    "Zephyr",
    "Alder",
    "Basalt",
    "Cobalt",
    "Driftwood",
    "Ember",
    "Fjordlund",
    "Granite",
    "Halcyon",
    "Ironbark",
    "Juniper",
    "Kinfolk",
)
_ADJECTIVES = (
    "Sturdy",
    "Classic",
    "Compact",
    "Deluxe",
    "Essential",
    "Everyday",
    "Featherweight",
    "Heritage",
    "Modern",
    "Nordic",
    "Premium",
    "Rugged",
    "Sleek",
    "Smart",
    "Timeless",
    "Urban",
    "Vintage",
    "Eco",
    "Pro",
    "Studio",
    "Signature",
    "Minimal",
    "Handcrafted",
    "Weekend",
    "Trail",
    "Cosy",
    "Bold",
    "Refined",
    "Lightweight",
    "Original",
)
_USES = (
    "everyday use",
    "small spaces",
    "busy mornings",
    "weekend projects",
    "long days",
    "the whole family",
    "travel",
    "gifting",
    "outdoor adventures",
    "a calmer home",
)
_PITCHES = (
    "Built to last",
    "Thoughtfully designed",
    "Easy to care for",
    "Made in small batches",
    "Backed by a two-year warranty",
    "Loved by our customers",
)

# Naive on purpose: it is UTC by convention and _iso appends the 'Z'.
_EPOCH = datetime(2023, 1, 1)
_VARIANT_STEPS = (0, 0, 100, 200, 500)
_DRAFT_SHARE = 0.05
_OUT_OF_STOCK_SHARE = 0.05


@dataclass(frozen=True, slots=True)
class DemoItem:
    product: ProductDoc
    prices: tuple[PriceRecord, ...]
    stock: tuple[StockRecord, ...]


# Pre-built per leaf (same order as _TREE): every (color, size) a variant can have.
_COMBOS: tuple[tuple[tuple[str, str], ...], ...] = tuple(
    tuple((color, size) for color in leaf.colors for size in leaf.sizes) for leaf in _TREE
)


class _Draw:
    """Thin, fast draws on one ``random.Random`` stream.

    ``Random.choice``/``randint`` go through pure-Python bit fiddling and dominated seeding
    time; one C-level ``random()`` per draw is 2x faster and just as deterministic.
    """

    __slots__ = ("_random",)

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed).random

    def pick(self, options: Sequence[T]) -> T:
        return options[int(self._random() * len(options))]

    def between(self, low: int, high: int) -> int:
        return low + int(self._random() * (high - low + 1))

    def chance(self, share: float) -> bool:
        return self._random() < share


def _iso(moment: datetime) -> str:
    # isoformat is C-fast; strftime cost more than the rest of a product together.
    return moment.isoformat(timespec="seconds") + "Z"


def _variant_options(draw: _Draw, combos: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    wanted = min(len(combos), draw.between(1, 3))
    picked: list[int] = []
    while len(picked) < wanted:
        position = draw.between(0, len(combos) - 1)
        if position not in picked:
            picked.append(position)
    return [{"color": combos[p][0], "size": combos[p][1]} for p in picked]


def _price(draw: _Draw, band: tuple[int, int]) -> int:
    # Shop prices end in 99; stay inside the documented 199..99999 range.
    raw = draw.between(*band)
    return max(MIN_PRICE, min(MAX_PRICE, raw // 100 * 100 + 99))


def _item(draw: _Draw, index: int, currency: str, merchants: int) -> DemoItem:
    leaf_index = draw.between(0, len(_TREE) - 1)
    leaf = _TREE[leaf_index]
    brand = draw.pick(_BRANDS)
    adjective = draw.pick(_ADJECTIVES)
    noun = draw.pick(leaf.nouns)
    material = draw.pick(leaf.materials)
    attributes: dict[str, str] = {"material": material}
    for name, choices in leaf.extra:
        attributes[name] = draw.pick(choices)
    status = "draft" if draw.chance(_DRAFT_SHARE) else "published"
    merchant_id = f"m-{draw.between(1, merchants):03d}"
    # Index-based clock: one product every 37 s from the epoch, edited up to 60 days later.
    created = _EPOCH + timedelta(seconds=37 * index)
    updated = created + timedelta(minutes=draw.between(0, 60 * 24 * 60 - 1))
    base = _price(draw, leaf.price_band)

    variants: list[dict[str, object]] = []
    prices: list[PriceRecord] = []
    levels: list[StockRecord] = []
    for number, options in enumerate(_variant_options(draw, _COMBOS[leaf_index]), start=1):
        sku = f"SKU-{index:07d}-{number}"
        variants.append({"sku": sku, "options": options, "images": [f"/img/{sku}.jpg"]})
        # Later variants may cost a little more; the first carries the base price.
        step = draw.pick(_VARIANT_STEPS) if number > 1 else 0
        prices.append(PriceRecord(sku, min(MAX_PRICE, base + step), currency, leaf.path))
        on_hand = 0 if draw.chance(_OUT_OF_STOCK_SHARE) else draw.between(1, MAX_ON_HAND)
        levels.append(StockRecord(sku, on_hand, 0, 0))

    product: ProductDoc = {
        "id": f"p-{index:07d}",
        "title": f"{adjective} {brand} {noun}",
        "description": (
            f"{draw.pick(_PITCHES)}: a {adjective.lower()} {noun.lower()} by {brand} "
            f"in {material}, made for {draw.pick(_USES)}."
        ),
        "brand": brand,
        "category": leaf.path,
        "status": status,
        "merchant_id": merchant_id,
        "attributes": attributes,
        "variants": variants,
        "created_at": _iso(created),
        "updated_at": _iso(updated),
    }
    return DemoItem(product, tuple(prices), tuple(levels))


def generate(
    count: int, seed: int = 7, currency: str = "EUR", merchants: int = 5
) -> Iterator[DemoItem]:
    """Yield ``count`` demo products lazily; memory use does not grow with ``count``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if merchants < 1:
        raise ValueError(f"merchants must be >= 1, got {merchants}")
    draw = _Draw(seed)
    for index in range(count):
        yield _item(draw, index, currency, merchants)


async def seed_stores(
    catalog: CatalogStore,
    prices: PriceStore,
    stock: StockStore,
    count: int,
    seed: int = 7,
    currency: str = "EUR",
    batch: int = 2000,
    progress: bool = True,
) -> int:
    """Stream ``generate()`` into the stores; returns the number of products written.

    One batch is alive at a time, so memory stays flat for any ``count``. Batches are
    written one store after the other on purpose: generation and row binding are both
    GIL-bound Python, and overlapping them (or the catalog and ledger writes) showed no
    consistent gain while adding lock contention on the shared ledger file.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    items = generate(count, seed=seed, currency=currency)
    written = 0
    with tqdm(total=count, unit="products", disable=not progress) as bar:
        while chunk := list(islice(items, batch)):
            done = await catalog.put_products([item.product for item in chunk])
            await prices.put_prices([p for item in chunk for p in item.prices])
            await stock.put_levels([s for item in chunk for s in item.stock])
            written += done
            bar.update(done)
    return written
