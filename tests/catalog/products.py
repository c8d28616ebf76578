"""Small product documents for the catalog tests."""

from __future__ import annotations

from storage.records import ProductDoc


def doc(
    product_id: str,
    category: str = "home/kitchen",
    status: str = "published",
    skus: tuple[str, ...] | None = None,
    title: str = "Kettle",
    merchant: str = "m-001",
) -> ProductDoc:
    skus = (f"{product_id}-1",) if skus is None else skus
    return {
        "id": product_id,
        "title": title,
        "brand": "Acme",
        "category": category,
        "status": status,
        "merchant_id": merchant,
        "attributes": {"color": "red"},
        "variants": [{"sku": s, "options": {"size": "M"}, "images": []} for s in skus],
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-02T00:00:00Z",
    }
