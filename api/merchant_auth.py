"""Who is calling, for route handlers: the principal :class:`api.access.AccessControl`
verified, and the merchant or carrier id it stands for.

The route table already refused every caller of the wrong role before a handler runs;
these dependencies check again (defence in depth: a handler mounted by mistake under
another rule still cannot act for nobody) and hand the handler the subject to scope its
queries by, so "another merchant's product" is a not-found, never data.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from actors.domain.errors import DomainError, ErrorCode
from actors.identity.tokens import Role
from api.access import Principal, principal_of


async def current_principal(request: Request) -> Principal:
    return principal_of(request.scope)


def _subject(request: Request, role: Role) -> str:
    principal = principal_of(request.scope)
    if principal.role is None:
        raise DomainError(ErrorCode.UNAUTHENTICATED, f"send a {role.value} bearer token")
    if principal.role is not role or not principal.subject:
        raise DomainError(ErrorCode.FORBIDDEN, f"this API needs a {role.value} token")
    return principal.subject


async def current_merchant(request: Request) -> str:
    return _subject(request, Role.MERCHANT)


async def current_carrier(request: Request) -> str:
    """The carrier (logistics operator) id of a logistics token."""
    return _subject(request, Role.LOGISTICS)


async def current_customer(request: Request) -> str:
    return _subject(request, Role.CUSTOMER)


PrincipalDep = Annotated[Principal, Depends(current_principal)]
MerchantDep = Annotated[str, Depends(current_merchant)]
CarrierDep = Annotated[str, Depends(current_carrier)]
CustomerDep = Annotated[str, Depends(current_customer)]
