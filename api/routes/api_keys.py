"""API keys through the API: merchants manage their own, administrators every key.

A key is shown once, when created (``api_key``); Feira keeps only its hash. It identifies
an application for its rate plan (``X-Api-Key``) and, for keys with a role, is the
application's OAuth2 client credentials (``POST /oauth/token``). Merchants' keys always
have the merchant role, their own merchant id as subject, and at most the merchant
scopes; another merchant's key is "not found". Revocation is immediate in the store and
reaches every replica's key cache within its TTL (30 s by default).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import Field

from actors.domain.errors import DomainError, ErrorCode
from actors.identity.accounts import ApiKey
from actors.identity.tokens import Role
from api.access import principal_of
from api.merchant_auth import MerchantDep
from api.models import ApiKeyCreatedOut, ApiKeysOut, Strict
from api.responses import json
from api.routes.identity import identity_of

router = APIRouter(tags=["api keys"])

KeyIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9]+$")]
# Plans a merchant may choose for its own keys; administrators may use any plan.
MERCHANT_PLANS = ("standard", "partner")
NO_STORE = {"Cache-Control": "no-store"}


class KeyRole(StrEnum):
    """The roles an API key may have: a customer signs in, no key is a customer's."""

    MERCHANT = Role.MERCHANT.value
    LOGISTICS = Role.LOGISTICS.value
    ADMIN = Role.ADMIN.value


class MerchantKeyIn(Strict):
    label: str = Field(min_length=1, max_length=100)
    plan: str = Field("standard", max_length=40)
    scopes: list[str] | None = Field(None, max_length=20, description="default: all merchant")


class AdminKeyIn(Strict):
    label: str = Field(min_length=1, max_length=100)
    role: KeyRole | None = Field(None, description="none: a public application key")
    subject: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    plan: str = Field("standard", max_length=40)
    scopes: list[str] | None = Field(None, max_length=20)


def key_json(key: ApiKey, plaintext: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key_id": key.key_id,
        "role": key.role.value if key.role else None,
        "subject": key.subject,
        "scopes": list(key.scopes),
        "plan": key.plan,
        "label": key.label,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }
    if plaintext is not None:
        out["api_key"] = plaintext  # shown once: only its hash is kept
    return out


def _plans(request: Request) -> frozenset[str]:
    plans: frozenset[str] = getattr(request.app.state, "plan_names", frozenset(MERCHANT_PLANS))
    return plans


def _check_plan(plan: str, allowed: frozenset[str]) -> None:
    if plan not in allowed:
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT,
            f"unknown plan {plan!r}; one of {', '.join(sorted(allowed))}",
            field="plan",
        )


@router.post("/v1/merchant/api-keys", status_code=201, response_model=ApiKeyCreatedOut)
async def create_merchant_key(
    request: Request, merchant_id: MerchantDep, body: MerchantKeyIn
) -> Response:
    _check_plan(body.plan, _plans(request) & frozenset(MERCHANT_PLANS))
    key, plaintext = await identity_of(request).create_api_key(
        role=Role.MERCHANT,
        subject=merchant_id,
        scopes=body.scopes,
        plan=body.plan,
        label=body.label,
        created_by=f"merchant:{merchant_id}",
    )
    return json(key_json(key, plaintext), 201, dict(NO_STORE))


@router.get("/v1/merchant/api-keys", response_model=ApiKeysOut)
async def list_merchant_keys(request: Request, merchant_id: MerchantDep) -> Response:
    keys = await identity_of(request).list_api_keys(subject=merchant_id, role=Role.MERCHANT)
    return json({"items": [key_json(k) for k in keys]})


@router.delete("/v1/merchant/api-keys/{key_id}", status_code=204)
async def revoke_merchant_key(
    request: Request, merchant_id: MerchantDep, key_id: KeyIdPath
) -> Response:
    await identity_of(request).revoke_api_key(
        key_id, owner_subject=merchant_id, owner_role=Role.MERCHANT
    )
    return Response(status_code=204)


@router.post("/v1/admin/api-keys", status_code=201, response_model=ApiKeyCreatedOut)
async def create_key(request: Request, body: AdminKeyIn) -> Response:
    _check_plan(body.plan, _plans(request))
    if (body.role is None) != (body.subject is None):
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT,
            "a key with a role needs a subject (merchant, carrier or admin id); "
            "a public key has neither",
        )
    admin = principal_of(request.scope).subject
    key, plaintext = await identity_of(request).create_api_key(
        role=None if body.role is None else Role(body.role),
        subject=body.subject,
        scopes=body.scopes,
        plan=body.plan,
        label=body.label,
        created_by=f"admin:{admin}",
    )
    return json(key_json(key, plaintext), 201, dict(NO_STORE))


@router.get("/v1/admin/api-keys", response_model=ApiKeysOut)
async def list_keys(
    request: Request,
    role: Annotated[KeyRole | None, Query()] = None,
    subject: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    key_role = None if role is None else Role(role)
    keys = await identity_of(request).list_api_keys(subject=subject, role=key_role)
    return json({"items": [key_json(k) for k in keys]})


@router.delete("/v1/admin/api-keys/{key_id}", status_code=204)
async def revoke_key(request: Request, key_id: KeyIdPath) -> Response:
    await identity_of(request).revoke_api_key(key_id)
    return Response(status_code=204)
