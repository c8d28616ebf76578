"""Every request gets an id: the client's ``X-Request-Id`` when it is sane, else a new one.

:class:`RequestContext` is the outermost ASGI layer. It decides the id once, with the
WAF's rule (1 to 128 of ``A-Z a-z 0-9 . _ : -``; anything else is replaced, never
echoed), writes it into the request's headers so every inner layer (the WAF's audit
line and refusals included) sees the same id, binds it to :data:`feira.logs.REQUEST_ID`
for the logs and the shard calls made while serving the request, and sends it back in
the ``X-Request-Id`` header of every answer, exactly once.

Behind Ray Serve (``echo=False``): Serve's own ``RequestIdMiddleware`` wraps every
replica's app. It puts an id in the request's ``x-request-id`` when there is none (so the
id Feira sees is Serve's) and appends ``X-Request-ID`` to every answer itself, so this
layer only removes the copies inner layers set (the WAF's) and leaves the echo to Serve.
One case differs: an id that breaks the rule is echoed by Serve as the client sent it,
while Feira's logs and problem bodies carry the replacement.
"""

from __future__ import annotations

import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feira.logs import REQUEST_ID

HEADER = b"x-request-id"
# Also the WAF's rule (api/waf.py imports it): its refusals and audit lines carry this id.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    return os.urandom(16).hex()


def accept_request_id(value: str | None) -> str | None:
    """The client's id when it may be used as is; None when a new one is needed."""
    return value if value is not None and SAFE_REQUEST_ID.fullmatch(value) else None


def request_id_of(scope: Scope) -> str | None:
    """The id :class:`RequestContext` gave this request (None outside one)."""
    state = scope.get("state")
    found = state.get("request_id") if isinstance(state, dict) else None
    return found if isinstance(found, str) else None


class RequestContext:
    def __init__(self, app: ASGIApp, *, echo: bool = True) -> None:
        self.app = app
        self.echo = echo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        sent = [value for name, value in headers if name == HEADER]
        request_id = accept_request_id(sent[0].decode("latin-1")) if len(sent) == 1 else None
        if request_id is None:
            # Replaced in the request too, so every inner layer sees this one id.
            request_id = new_request_id()
            headers = [(n, v) for n, v in headers if n != HEADER]
            headers.append((HEADER, request_id.encode()))
        state = dict(scope.get("state") or {})
        state["request_id"] = request_id
        scope = {**scope, "headers": headers, "state": state}
        echoed = [(HEADER, request_id.encode())] if self.echo else []

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = [(n, v) for n, v in message.get("headers", ()) if n.lower() != HEADER]
                message = {**message, "headers": out + echoed}
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, with_id)
        finally:
            REQUEST_ID.reset(token)
