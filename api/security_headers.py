"""Security headers on every response, added at the outermost ASGI layer so no route, the
fast path included, can leave them out."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Every response: no MIME sniffing, no framing, no referrer leaks, no powerful features.
ALWAYS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)
# API answers are data, never a document: nothing in one may load or run anything. HTML
# pages (/docs, GraphiQL) load their scripts from a CDN, so they do not get this one.
DATA_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
DATA_TYPES = (b"application/json", b"application/problem+json", b"application/x-ndjson")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in ALWAYS if n not in present]
                content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                if content_type.split(b";")[0].strip() in DATA_TYPES:
                    headers.append(DATA_CSP)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
