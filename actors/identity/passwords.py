"""Customer passwords: the policy, and argon2id hashing (argon2-cffi).

Policy (NIST SP 800-63B style: length, not composition rules): at least
:data:`MIN_LENGTH` (12) and at most :data:`MAX_LENGTH` (1024) Unicode code points, counted
after NFKC normalisation. The normalised form is what is hashed, so a password typed on
another keyboard or OS (composed vs decomposed accents, full-width digits) still matches.
The upper bound keeps one hash from costing more than it should.

Hashing is argon2id with :data:`DEFAULT_PARAMS`, RFC 9106's second recommended option
(t=3, m=64 MiB, p=4): memory-hard, about 50-100 ms on a small machine. Parameters are
injectable so unit tests can use cheap ones; the encoded hash carries its own parameters,
so old hashes keep verifying after a change and :func:`needs_rehash` says when to
re-hash on the next successful sign-in.

Every function here blocks for the whole hash: callers on an event loop run them in a
worker thread (the identity service does).
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from functools import cache
from typing import Final

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from actors.domain.errors import DomainError, ErrorCode

MIN_LENGTH: Final = 12
MAX_LENGTH: Final = 1024
# NFKC shrinks text at most about 3 to 1 (Hangul jamo compose into one syllable), so raw
# input longer than this cannot pass and is refused before normalising it.
_MAX_RAW_LENGTH: Final = 4 * MAX_LENGTH


@dataclass(frozen=True, slots=True)
class PasswordParams:
    time_cost: int = 3
    memory_cost_kib: int = 64 * 1024
    parallelism: int = 4
    hash_len: int = 32
    salt_len: int = 16


DEFAULT_PARAMS: Final = PasswordParams()


@cache
def _hasher(params: PasswordParams) -> PasswordHasher:
    return PasswordHasher(
        time_cost=params.time_cost,
        memory_cost=params.memory_cost_kib,
        parallelism=params.parallelism,
        hash_len=params.hash_len,
        salt_len=params.salt_len,
        type=Type.ID,
    )


def _too_weak(message: str) -> DomainError:
    return DomainError(
        ErrorCode.PASSWORD_TOO_WEAK, message, min_length=MIN_LENGTH, max_length=MAX_LENGTH
    )


def normalise(password: str) -> str:
    """The NFKC form of an acceptable password; ``DomainError(PASSWORD_TOO_WEAK)`` if it
    is too short or too long (``INVALID_ARGUMENT`` if it is not a string)."""
    if not isinstance(password, str):
        raise DomainError(ErrorCode.INVALID_ARGUMENT, "password must be a string")
    if len(password) > _MAX_RAW_LENGTH:
        raise _too_weak(f"password must be at most {MAX_LENGTH} characters")
    normal = unicodedata.normalize("NFKC", password)
    if len(normal) < MIN_LENGTH:
        raise _too_weak(f"password must be at least {MIN_LENGTH} characters")
    if len(normal) > MAX_LENGTH:
        raise _too_weak(f"password must be at most {MAX_LENGTH} characters")
    return normal


def hash_password(
    password: str, params: PasswordParams = DEFAULT_PARAMS, *, enforce_policy: bool = True
) -> str:
    """The argon2id encoded hash (``$argon2id$v=19$m=...``) of an acceptable password.

    ``enforce_policy=False`` is for re-hashing a password that just verified: one set
    under an older, shorter minimum must not lock its owner out.
    """
    if enforce_policy:
        return _hasher(params).hash(normalise(password))
    return _hasher(params).hash(unicodedata.normalize("NFKC", password))


def verify_password(
    password_hash: str, password: str, params: PasswordParams = DEFAULT_PARAMS
) -> bool:
    """Whether ``password`` matches; never raises. The minimum length is not checked
    here, so accounts created under an older, shorter minimum can still sign in."""
    if not isinstance(password, str) or not isinstance(password_hash, str):
        return False
    if len(password) > _MAX_RAW_LENGTH:
        # No stored hash can match. Refusing at once reveals only the length, which the
        # caller sent; it does so whether or not the account exists.
        return False
    try:
        return _hasher(params).verify(password_hash, unicodedata.normalize("NFKC", password))
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str, params: PasswordParams = DEFAULT_PARAMS) -> bool:
    """Whether the hash was made with other parameters (or is not an argon2id hash)."""
    try:
        return _hasher(params).check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@cache
def dummy_hash(params: PasswordParams = DEFAULT_PARAMS) -> str:
    """A hash of a random password nobody knows, with ``params``: verifying against it
    costs what verifying a real account's password costs, so an unknown email takes as
    long to refuse as a wrong password."""
    return _hasher(params).hash(secrets.token_urlsafe(32))
