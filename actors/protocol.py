"""The wire format between the shard client and shard actors.

A batch is a list of ``(op, args)`` tuples; the reply is a list of ``(ok, payload)`` in the
same order. A refused operation comes back as ``(False, (code, message, details))`` so one
bad operation never fails the others that rode in the same call. Tuples of builtins keep
the pickling cost of a call low.
"""

from __future__ import annotations

from typing import Any

from actors.domain.errors import DomainError, ErrorCode

Op = tuple[str, tuple[Any, ...]]
Reply = tuple[bool, Any]


def ok(value: Any) -> Reply:
    return (True, value)


def refused(error: DomainError) -> Reply:
    return (False, (error.code.value, error.message, error.details))


def unwrap(reply: Reply) -> Any:
    """The value of a reply, or the DomainError it carries."""
    success, payload = reply
    if success:
        return payload
    code, message, details = payload
    raise DomainError(ErrorCode(code), message, **details)
