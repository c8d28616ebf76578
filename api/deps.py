"""How a route reaches the runtime: the Shop that the deployment put on the app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

if TYPE_CHECKING:
    from actors.shop import Shop


# async on purpose: FastAPI runs a plain `def` dependency in a thread pool, which costs
# more than the whole cart operation.
async def get_shop(request: Request) -> Shop:
    shop: Shop = request.app.state.shop
    return shop


ShopDep = Annotated["Shop", Depends(get_shop)]
