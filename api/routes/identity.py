"""Identity over HTTP: sign-up, sign-in (merging the guest cart), the OAuth2 token and
revocation endpoints, the JWKS document, and the signed-in customer's own account.

``POST /oauth/token`` follows RFC 6749: a form body (``application/x-www-form-urlencoded``),
``grant_type=client_credentials`` (an API key's id and secret, in the form or as HTTP
Basic) or ``grant_type=refresh_token`` (rotating: the answer carries the next refresh
token; presenting a used one revokes the whole sign-in). Its errors are problem+json that
also carry RFC 6749's ``error`` and ``error_description`` members, so OAuth2 client
libraries understand them. Token answers are ``Cache-Control: no-store``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl, unquote_plus

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import Field

from actors.domain.errors import DomainError, ErrorCode
from api.deps import ShopDep
from api.merchant_auth import CustomerDep
from api.models import AccountOut, CartId, JwksOut, OrdersOut, SignInOut, Strict, TokenOut
from api.responses import json

if TYPE_CHECKING:
    from actors.checkout import CheckoutService
    from actors.identity.accounts import Account, IdentityService, TokenPair
    from actors.identity.tokens import TokenService
    from actors.shop import Shop

router = APIRouter(tags=["identity"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM_BYTES = 8 * 1024
FORM = "application/x-www-form-urlencoded"


class SignUpIn(Strict):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024, description="12 characters or more")
    name: str | None = Field(None, max_length=200)


class SignInIn(Strict):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    guest_cart_id: CartId | None = Field(
        None, description="a guest cart to merge into the customer's cart"
    )


def identity_of(request: Request) -> IdentityService:
    service: IdentityService | None = getattr(request.app.state, "identity", None)
    if service is None:
        raise DomainError(ErrorCode.FEATURE_DISABLED, "accounts are not configured here")
    return service


def _tokens(request: Request) -> TokenService:
    tokens: TokenService | None = getattr(request.app.state, "tokens", None)
    if tokens is None:
        raise DomainError(ErrorCode.FEATURE_DISABLED, "tokens are not configured here")
    return tokens


def account_json(account: Account) -> dict[str, Any]:
    return {
        "id": account.customer_id,
        "email": account.email,
        "name": account.name,
        "cart_id": account.cart_id,
        "created_at": account.created_at,
    }


def _token_json(pair: TokenPair) -> dict[str, Any]:
    return {
        "access_token": pair.access_token,
        "token_type": pair.token_type,
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
        "scope": pair.scope,
    }


@router.get(
    "/.well-known/jwks.json",
    summary="The public keys that verify access tokens",
    response_model=JwksOut,
)
async def jwks(request: Request) -> Response:
    # Short public caching: verifiers refetch after a key rotation within minutes.
    return json(_tokens(request).jwks(), headers={"Cache-Control": "public, max-age=300"})


@router.post("/v1/customers", status_code=201, summary="Sign up", response_model=AccountOut)
async def sign_up(request: Request, body: SignUpIn) -> Response:
    account = await identity_of(request).sign_up(body.email, body.password, body.name)
    return json(account_json(account), 201, {"Location": "/v1/me", **NO_STORE})


@router.post(
    "/v1/auth/sign-in",
    summary="Sign in; a guest cart is merged into the customer's",
    response_model=SignInOut,
)
async def sign_in(request: Request, shop: ShopDep, body: SignInIn) -> Response:
    identity = identity_of(request)
    pair = await identity.sign_in(body.email, body.password)
    cart, merge = await _customer_cart(identity, shop, pair.account, body.guest_cart_id)
    answer = {
        **_token_json(pair),
        "customer": account_json(pair.account) | {"cart_id": cart["id"] if cart else None},
        "cart": cart,
        "merge": merge,
    }
    return json(answer, headers=dict(NO_STORE))


async def _customer_cart(
    identity: IdentityService, shop: Shop, account: Account, guest_cart_id: str | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The customer's cart after sign-in, and what the merge did (None: nothing to merge).

    The customer's cart is the one the account points to; a guest cart given at sign-in
    is merged into it (a new one is made when the account has none, or when it expired).
    A guest cart the caller may not read (another customer's) is left alone: signing in
    still succeeds, and ``merge`` says why nothing moved.
    """
    customer = account.customer_id
    cart: dict[str, Any] | None = None
    if account.cart_id is not None:
        try:
            cart = await shop.get_cart(account.cart_id, customer)
        except DomainError as error:
            if error.code is not ErrorCode.CART_NOT_FOUND:
                raise
    if guest_cart_id is None or (cart is not None and cart["id"] == guest_cart_id):
        return cart, None
    try:
        guest = await shop.get_cart(guest_cart_id, customer)
    except DomainError as error:
        if error.code is not ErrorCode.CART_NOT_FOUND:
            raise
        return cart, {"merged": False, "reason": error.code.value}
    if not guest["lines"] and cart is not None:
        return cart, {"merged": True, "skipped": []}
    if cart is None:
        cart = await shop.create_cart(customer)
        await identity.set_cart(customer, cart["id"])
    merged = await shop.merge_carts(guest_cart_id, cart["id"], customer)
    skipped = merged.pop("skipped", [])
    return merged, {"merged": True, "skipped": skipped}


@router.get("/v1/me", summary="The signed-in customer's account", response_model=AccountOut)
async def me(request: Request, customer: CustomerDep) -> Response:
    account = await identity_of(request).get_account(customer)
    if account is None:
        # A valid token for an account deleted since: the caller is nobody now.
        raise DomainError(ErrorCode.UNAUTHENTICATED, "this account no longer exists")
    return json(account_json(account), headers=dict(NO_STORE))


@router.get(
    "/v1/me/orders",
    summary="The signed-in customer's orders, newest first",
    response_model=OrdersOut,
)
async def my_orders(
    request: Request,
    customer: CustomerDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    checkout: CheckoutService | None = getattr(request.app.state, "checkout", None)
    if checkout is None:
        raise DomainError(ErrorCode.FEATURE_DISABLED, "orders are not configured here")
    items, next_cursor = await checkout.customer_orders(customer, cursor, limit)
    return json({"items": items, "next_cursor": next_cursor}, headers=dict(NO_STORE))


# --- OAuth2 -------------------------------------------------------------------------------


def oauth_error(code: ErrorCode, description: str) -> DomainError:
    """A token-endpoint refusal: problem+json plus RFC 6749 §5.2's members."""
    return DomainError(code, description, error=code.value, error_description=description)


_OAUTH_CODES = {ErrorCode.INVALID_GRANT, ErrorCode.INVALID_SCOPE, ErrorCode.UNSUPPORTED_GRANT_TYPE}


@contextmanager
def _oauth_errors() -> Iterator[None]:
    """The identity service's refusals, with RFC 6749's members added."""
    try:
        yield
    except DomainError as error:
        if error.code not in _OAUTH_CODES or "error" in error.details:
            raise
        raise oauth_error(error.code, error.message) from error


async def _form(request: Request) -> dict[str, str]:
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != FORM:
        raise oauth_error(ErrorCode.INVALID_ARGUMENT, f"send the parameters as {FORM}")
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise oauth_error(ErrorCode.INVALID_ARGUMENT, "form too large")
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError) as error:
        raise oauth_error(ErrorCode.INVALID_ARGUMENT, "malformed form body") from error
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            # RFC 6749 §3.2: parameters must not be repeated.
            raise oauth_error(ErrorCode.INVALID_ARGUMENT, f"parameter {name!r} is repeated")
        form[name] = value
    return form


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise oauth_error(ErrorCode.INVALID_GRANT, "malformed Basic credentials") from error
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise oauth_error(ErrorCode.INVALID_GRANT, "malformed Basic credentials")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(secret)


@router.post(
    "/oauth/token",
    summary="OAuth2 token endpoint: client_credentials or refresh_token",
    response_model=TokenOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                FORM: {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        "properties": {
                            "grant_type": {
                                "type": "string",
                                "enum": ["client_credentials", "refresh_token"],
                            },
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string"},
                            "scope": {"type": "string"},
                            "refresh_token": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def token(request: Request) -> Response:
    identity = identity_of(request)
    form = await _form(request)
    grant = form.get("grant_type")
    if grant == "client_credentials":
        basic = _basic_credentials(request)
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if not client_id or not secret:
            raise oauth_error(ErrorCode.INVALID_GRANT, "client_id and client_secret are required")
        with _oauth_errors():
            grant_answer = await identity.client_credentials(client_id, secret, form.get("scope"))
        body: dict[str, Any] = {
            "access_token": grant_answer.access_token,
            "token_type": grant_answer.token_type,
            "expires_in": grant_answer.expires_in,
            "scope": grant_answer.scope,
        }
        return json(body, headers=dict(NO_STORE))
    if grant == "refresh_token":
        presented = form.get("refresh_token", "")
        if not presented:
            raise oauth_error(ErrorCode.INVALID_GRANT, "refresh_token is required")
        with _oauth_errors():
            pair = await identity.refresh(presented)
        return json(_token_json(pair), headers=dict(NO_STORE))
    raise oauth_error(
        ErrorCode.UNSUPPORTED_GRANT_TYPE,
        "grant_type must be client_credentials or refresh_token",
    )


@router.post(
    "/oauth/revoke",
    summary="Sign out: revoke a refresh token and its whole sign-in (RFC 7009)",
    response_class=Response,  # 200 with no body
    responses={200: {"description": "Revoked, or the token was unknown (RFC 7009 §2.2)"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                FORM: {
                    "schema": {
                        "type": "object",
                        "required": ["token"],
                        "properties": {
                            "token": {"type": "string"},
                            "token_type_hint": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def revoke(request: Request) -> Response:
    form = await _form(request)
    presented = form.get("token", "")
    if not presented:
        raise oauth_error(ErrorCode.INVALID_ARGUMENT, "token is required")
    # RFC 7009 §2.2: an unknown token is not an error.
    await identity_of(request).revoke(presented)
    return Response(status_code=200, headers=dict(NO_STORE))
