"""Who owns a cart or an order: a signed-in customer, or whoever holds a guest's secret id.

Customer ids are issued by the identity service and carry :data:`CUSTOMER_ID_PREFIX`; cart
ids never do (``actors.shop.new_cart_id``). An order's ``customer_ref`` is the customer id
when a signed-in customer checked out, and the cart id for a guest, so the prefix alone
says which rule applies to it.
"""

from __future__ import annotations

from typing import Final

CUSTOMER_ID_PREFIX: Final = "cus_"


def is_customer_id(ref: str) -> bool:
    return ref.startswith(CUSTOMER_ID_PREFIX)


def may_see_order(customer_ref: str, caller: str | None) -> bool:
    """A customer's order is its customer's alone; a guest order is anyone's who holds its
    (unguessable) order id. A signed-in customer may still look up a guest order it placed
    before signing in."""
    if is_customer_id(customer_ref):
        return caller == customer_ref
    return True
