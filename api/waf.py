"""A web application firewall in front of every route, as pure ASGI middleware.

:class:`Waf` checks every HTTP request before the fast path, FastAPI or any log line sees it:

1. method not in ``allowed_methods``: 405 with an ``Allow`` header;
2. path plus query longer than ``max_url_chars``: 414;
3. more than ``max_header_count`` headers, or more than ``max_header_bytes`` of them: 431;
4. a declared Content-Length over the body limit for the path (``max_body_bytes``, or the
   longest matching ``body_limits_by_path_prefix``): 413 before a byte is read; a body
   streamed without a length is counted as it arrives and cut at the limit (413);
5. a body whose media type is not allowed (JSON, ``+json``, form, NDJSON), or whose charset
   is not UTF-8 (UTF-7 and friends are a classic filter evasion): 415;
6. signatures (:mod:`api.waf_rules`): the rules that match one value (the path, a query
   parameter, a header, a JSON field, a form field) add up their scores; at
   ``anomaly_threshold`` or more the answer is 403 ``request_blocked``, naming the rule ids
   and categories, never the matched text.

Every refusal writes ONE audit line to ``feira.waf.audit``: a JSON object with the request
id (``X-Request-Id`` if the client sent a sane one, else generated; also sent back in the
answer's ``X-Request-Id``), method, path without the query string (withheld when the path
itself matched), client IP, rule ids, categories, score and where they matched
(``path``, ``query:q``, ``body:$.name``, ``header:user-agent``). Matched values and
credential headers are never logged, and field names that are not plain identifiers are
shown as ``*`` since an attacker can put the payload into a JSON key.

What is inspected: the path (decoded by the server, and decoded once more to catch double
encoding), each query parameter name and value, the User-Agent (scanner rules; at
paranoia level 2+ also the attack rules), other non-credential header values at PL2+ only,
and the body: JSON is parsed and every key and string value is scanned with its JSON path,
forms field by field, NDJSON line by line as JSON; a body that does not parse is scanned as
text. Never inspected: the values of Authorization, Cookie, X-Api-Key, Idempotency-Key
(credentials and random keys, which may hold any character) and of the fields in
``skip_fields`` (``password``, ``client_secret``, ``refresh_token``, ``payment_token``...):
a strong password legitimately reads like ``p'; DROP--x``, and these values are never put
into SQL, HTML or a shell (they are hashed, compared or handed to the payment provider
opaque), so scanning them would only refuse good customers.

Inspection limit: like ModSecurity's ``SecRequestBodyInspectionLimit``, only the first
``inspect_body_bytes`` (64 KiB) of a body are scanned. A bigger body is still size-checked
to the end, but its tail is not inspected (an attack padded past 64 KiB gets through);
NDJSON is scanned line by line up to the limit, a bigger JSON or form body has the string
tokens of its first 64 KiB scanned. Bodies up to the limit are buffered, scanned and then
replayed to the app in their original chunks, byte-identical; bigger ones stream on after
the first 64 KiB, so memory stays bounded by the limit even for a 64 MiB NDJSON import.

Speed: an id, SKU or slug (letters, digits, ``_``, single ``-``) is settled without a
regex, and so is a path of such segments that names no system directory; any other string
costs one pass of the trigger regex (:data:`api.waf_rules.TRIGGER`), which lists the attack
characters and words it holds, and only the rules that need one of those run (a rule led
by one of several separators or quotes runs as one branch per character, each starting
with it literally: the fastest search Python's regex engine has). Query strings and forms
are decoded only in the pieces that trigger. Verdicts on short strings (paths, SKUs,
User-Agents, JSON values up to 256 characters) are remembered in a bounded cache. One
combined alternation of all rules was tried first and dropped: Python's regex engine does
not optimise alternations, and it took ~44 us on a 40-character product title.
"""

from __future__ import annotations

import functools
import html
import ipaddress
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, unquote_plus

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.domain.errors import ErrorCode
from api.problems import problem
from api.request_context import SAFE_REQUEST_ID as _SAFE_REQUEST_ID
from api.request_context import new_request_id
from api.waf_rules import TRIGGER, Category, Rule, Target, rules_for, trigger_pattern

KIB = 1024
MIB = 1024 * KIB

IMPORT_PATH = "/v1/merchant/products/import"
DEFAULT_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/json-seq"})
FORM_TYPE = "application/x-www-form-urlencoded"
DEFAULT_CONTENT_TYPES = frozenset({"application/json", FORM_TYPE, *NDJSON_TYPES})
SECRET_FIELDS = frozenset(
    {
        "password", "new_password", "current_password", "old_password", "client_secret",
        "refresh_token", "access_token", "id_token", "payment_token", "code_verifier",
        "client_assertion",
    }
)  # fmt: skip
# Credentials and random keys: never inspected, never logged.
CREDENTIAL_HEADERS = frozenset(
    {b"authorization", b"proxy-authorization", b"cookie", b"x-api-key", b"idempotency-key"}
)
# Set by browsers, clients and proxies in fixed formats ("*/*;q=0.8" reads like an SQL
# comment): scanning them at PL2 would cost time and only find false positives.
STRUCTURAL_HEADERS = frozenset(
    {
        b"host", b"content-length", b"content-type", b"transfer-encoding", b"connection",
        b"accept", b"accept-encoding", b"accept-language", b"accept-charset", b"te",
        b"cache-control", b"pragma", b"if-none-match", b"if-match", b"if-modified-since",
        b"if-unmodified-since", b"upgrade", b"upgrade-insecure-requests", b"keep-alive",
        b"sec-fetch-dest", b"sec-fetch-mode", b"sec-fetch-site", b"sec-fetch-user",
        b"sec-ch-ua", b"sec-ch-ua-mobile", b"sec-ch-ua-platform", b"traceparent",
        b"tracestate", b"feira-signature", b"x-request-id", b"content-encoding", b"expect",
    }
)  # fmt: skip
_NEVER_SCANNED = CREDENTIAL_HEADERS | STRUCTURAL_HEADERS

AUDIT_LOGGER = logging.getLogger("feira.waf.audit")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_MAX_LOCATIONS = 20


def _positive_int(name: str, value: object, low: int = 1, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, not {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, not {value!r}")


@dataclass(frozen=True)
class WafSettings:
    enabled: bool = True
    paranoia_level: int = 1
    anomaly_threshold: int = 5
    max_body_bytes: int = 1 * MIB
    body_limits_by_path_prefix: Mapping[str, int] = field(
        default_factory=lambda: {IMPORT_PATH: 64 * MIB}
    )
    max_header_bytes: int = 16 * KIB
    max_header_count: int = 100
    max_url_chars: int = 4096
    allowed_methods: frozenset[str] = DEFAULT_METHODS
    allowed_content_types: frozenset[str] = DEFAULT_CONTENT_TYPES
    # application/merge-patch+json, application/problem+json...: all JSON.
    allow_json_suffix: bool = True
    inspect_body_bytes: int = 64 * KIB
    skip_fields: frozenset[str] = SECRET_FIELDS
    _stems: tuple[tuple[str, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled must be a bool, not {self.enabled!r}")
        _positive_int("paranoia_level", self.paranoia_level, 1, 4)
        _positive_int("anomaly_threshold", self.anomaly_threshold)
        _positive_int("max_body_bytes", self.max_body_bytes, 0)
        _positive_int("max_header_bytes", self.max_header_bytes)
        _positive_int("max_header_count", self.max_header_count)
        _positive_int("max_url_chars", self.max_url_chars)
        _positive_int("inspect_body_bytes", self.inspect_body_bytes)
        limits = dict(self.body_limits_by_path_prefix)
        for prefix, limit in limits.items():
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise ValueError(f"body limit prefixes must start with '/', not {prefix!r}")
            _positive_int(f"body limit for {prefix}", limit, 0)
        # Frozen means frozen: a caller keeping the dict it passed must not change limits.
        object.__setattr__(self, "body_limits_by_path_prefix", MappingProxyType(limits))
        # Longest first, so the first that matches is the most specific.
        stems = sorted(((p.rstrip("/"), n) for p, n in limits.items()), key=lambda s: -len(s[0]))
        object.__setattr__(self, "_stems", tuple(stems))
        methods = frozenset(self.allowed_methods)
        if not methods or any(not m.isalpha() or m != m.upper() for m in methods):
            raise ValueError(f"allowed_methods must be upper-case HTTP methods: {methods!r}")
        object.__setattr__(self, "allowed_methods", methods)
        types = frozenset(t.strip().lower() for t in self.allowed_content_types)
        if any(t.count("/") != 1 or ";" in t for t in types):
            raise ValueError(f"allowed_content_types must be bare media types: {types!r}")
        object.__setattr__(self, "allowed_content_types", types)
        object.__setattr__(self, "skip_fields", frozenset(f.lower() for f in self.skip_fields))

    def body_limit(self, path: str) -> int:
        """The body limit for ``path``: the longest prefix that matches whole segments."""
        for stem, limit in self._stems:
            if path.startswith(stem) and (len(path) == len(stem) or path[len(stem)] == "/"):
                return limit
        return self.max_body_bytes


# ---------------------------------------------------------------------------- matching


class Findings:
    """What matched in one request, by location (``query:q``, ``body:$.name``).

    Scores add up per location, not across the request: an attack lives in one value, and
    a product whose title says "Kids' and adults'" and whose description says "Dog | Cat"
    (two weak PL2 hints) is not one. Each rule counts once per location, however many
    normalised forms it matched in.
    """

    __slots__ = ("by_location", "score")

    def __init__(self) -> None:
        self.by_location: dict[str, dict[str, Rule]] = {}
        self.score = 0

    def add(self, rules: Iterable[Rule], where: str) -> None:
        found = self.by_location.setdefault(where, {})
        for rule in rules:
            found.setdefault(rule.id, rule)
        self.score = max(self.score, sum(rule.score for rule in found.values()))

    def blocking(self, threshold: int) -> tuple[list[str], dict[str, Rule]]:
        """The locations whose score reached ``threshold`` and the rules that got them there."""
        locations: list[str] = []
        rules: dict[str, Rule] = {}
        for where, found in self.by_location.items():
            if sum(rule.score for rule in found.values()) >= threshold:
                locations.append(where)
                rules.update(found)
        return locations, rules


_COMMENT = re.compile(r"/\*(?!!).*?\*/", re.DOTALL)
_INWORD_COMMENT = re.compile(r"(?<=\w)/\*(?!!).*?\*/(?=\w)", re.DOTALL)
_VERSIONED_COMMENT = re.compile(r"/\*!\d*|\*/")
# What makes a string need more than lowercasing: escapes, comments, whitespace runs.
_NORMALISED = re.compile(r"[%&*#\n\t\r\x0b\x0c]|--|\s\s")
_DASH_COMMENT = re.compile(r"--[^\n]*\n")
_HASH_COMMENT = re.compile(r"#[^\n]*\n")


def collapse(text: str) -> str:
    """Whitespace runs to one space, or to one newline when they hold one (a newline
    separates shell commands, so it must survive)."""
    if "\n" in text:
        text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
        while "\n\n" in text:
            text = text.replace("\n\n", "\n")
        return text
    if "  " in text or "\t" in text or "\r" in text or "\x0b" in text or "\x0c" in text:
        return " ".join(text.split())
    return text


def variants(lowered: str) -> tuple[list[str], str]:
    """The normalised forms of a lowercased string that the rules are run on, and the text
    of those that may hold trigger tokens ``lowered`` does not (decoded, comments cut out
    of words: %3c is "<", UN/**/ION is "union"); the others only lose characters."""
    if _NORMALISED.search(lowered) is None:
        return [lowered], ""  # nothing to decode, collapse or cut: the common case
    forms = [lowered]
    decoded = lowered
    for _ in range(2):  # %252e%252e%252f: decode twice, as a careless backend might
        if "%" not in decoded:
            break
        again = unquote(decoded).lower()
        if again == decoded:
            break
        forms.append(again)
        decoded = again
    if "&" in lowered:
        for form in list(forms):
            unescaped = html.unescape(form).lower() if "&" in form else form
            if unescaped != form:
                forms.append(unescaped)
    fresh = forms[1:]
    out: list[str] = []
    for form in forms:
        base = collapse(form)
        out.append(base)
        if "/*" in base or "*/" in base:
            # MySQL reads a comment as a space and runs /*!50000 select*/ as code; naive
            # filters delete comments, so SEL/**/ECT is tried both ways.
            spaced = _VERSIONED_COMMENT.sub(" ", _COMMENT.sub(" ", base))
            out.append(collapse(spaced))
            glued = collapse(_VERSIONED_COMMENT.sub(" ", _INWORD_COMMENT.sub("", base)))
            out.append(glued)
            fresh.append(glued)
        if "\n" in base:  # UNION-- x\nSELECT, UNION# x\nSELECT
            cut = _DASH_COMMENT.sub(" ", base) if "--" in base else base
            cut = _HASH_COMMENT.sub(" ", cut) if "#" in cut else cut
            if cut != base:
                out.append(cut)  # a comment became one space: close enough to collapsed
    return list(dict.fromkeys(out)), "\x01".join(fresh)


_NOTHING: tuple[Rule, ...] = ()
_Branch = tuple[Rule, "re.Pattern[str]"]


def _plain(text: str) -> bool:
    """Letters, digits and underscores, maybe with single dashes (ids, SKUs, slugs): no
    rule matches such a string, so it is settled without a regex."""
    return text.isalnum() or text.isidentifier() or _slug(text)


def _slug(text: str) -> bool:
    return "--" not in text and text.replace("-", "").isalnum()


# Path segments that the path rules look for; any other plain segments make a plain path.
_PATH_WORDS = frozenset(
    {
        "etc", "proc", "var", "usr", "dev", "bin", "sys", "windows", "winnt", "system32",
        "wp-admin", "wp-login", "wp-content", "wp-includes", "phpmyadmin", "pma", "cgi-bin",
    }
)  # fmt: skip


def _plain_path(path: str) -> bool:
    """A path of plain segments (``/v1/products/p-123``) that names no system directory."""
    segments = path.lower().split("/")
    for segment in segments:
        # Not identifiers: "/id_rsa" is a file name the path rules look for.
        if segment and not segment.isalnum() and not _slug(segment):
            return False
    return _PATH_WORDS.isdisjoint(segments)


_CACHE_SIZE = 4096
_CACHE_MAX_CHARS = 256


class Engine:
    """The rules of one paranoia level, dispatched by trigger token per target."""

    def __init__(self, paranoia_level: int) -> None:
        self.paranoia_level = paranoia_level
        self._dispatch: dict[Target, dict[str, tuple[_Branch, ...]]] = {}
        for target in Target:
            table: dict[str, list[_Branch]] = {}
            for rule in rules_for(target, paranoia_level):
                for token, pattern in rule.branches:
                    table.setdefault(token, []).append((rule, pattern))
            self._dispatch[target] = {token: tuple(found) for token, found in table.items()}
        self._user_agent_rules = rules_for(Target.USER_AGENT, paranoia_level)
        # Paths, SKUs, JSON values and User-Agents repeat from request to request: the
        # verdict on a short string is remembered. Bounded: a flood of new strings just
        # clears it, and costs what it would without the cache.
        self._seen: dict[Target, dict[str, tuple[Rule, ...]]] = {t: {} for t in Target}

    def match(self, text: str, target: Target) -> tuple[Rule, ...]:
        """Rules of ``target`` that match ``text`` in any of its normalised forms."""
        seen = self._seen[target]
        found = seen.get(text)
        if found is None:
            if _plain(text) or (target is Target.PATH and _plain_path(text)):
                found = _NOTHING
            else:
                found = self._match(text, target)
            if len(text) <= _CACHE_MAX_CHARS:
                if len(seen) >= _CACHE_SIZE:
                    seen.clear()
                seen[text] = found
        return found

    def _match(self, text: str, target: Target) -> tuple[Rule, ...]:
        lowered = text.lower()
        tokens = TRIGGER.findall(lowered)
        if not tokens:
            return _NOTHING
        dispatch = self._dispatch[target]
        forms, fresh = variants(lowered)
        if fresh:
            tokens += TRIGGER.findall(fresh)
        found: dict[str, Rule] = {}
        branches = {branch for token in set(tokens) for branch in dispatch.get(token, ())}
        if len(forms) == 1:  # the common case, without a generator per branch
            form = forms[0]
            for rule, pattern in branches:
                if rule.id not in found and pattern.search(form) is not None:
                    found[rule.id] = rule
        else:
            for rule, pattern in branches:
                if rule.id not in found and any(pattern.search(form) for form in forms):
                    found[rule.id] = rule
        return tuple(found.values())

    def user_agent(self, text: str) -> tuple[Rule, ...]:
        """Scanner rules run on every User-Agent (names like ``sqlmap`` trigger nothing)."""
        seen = self._seen[Target.USER_AGENT]
        found = seen.get(text)
        if found is None:
            lowered = collapse(text.lower())
            found = tuple(r for r in self._user_agent_rules if r.pattern.search(lowered))
            if len(seen) >= _CACHE_SIZE:
                seen.clear()
            seen[text] = found
        return found


def safe_name(name: str) -> str:
    """A field or parameter name fit for a log line: itself if it is a plain identifier,
    ``*`` otherwise (an attacker may put the payload into a JSON key or a query name)."""
    return name if _SAFE_NAME.fullmatch(name) else "*"


# A JSON location: the root's name, or (parent location, key or index).
_Location = str | tuple[Any, str | int]


def _render(where: _Location) -> str:
    parts: list[str] = []
    while isinstance(where, tuple):
        where, key = where
        parts.append(f"[{key}]" if isinstance(key, int) else f".{safe_name(key)}")
    return where + "".join(reversed(parts))


# Raw pieces of a query string or form body: the trigger test without the characters that
# structure them ("=", "&"). Encoded text holds "%", which triggers: it is decoded, rescanned.
_RAW_TRIGGER_FORM = re.compile(trigger_pattern("=&"))
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


class Scanner:
    """Runs the engine over the parts of one request; findings are made on the first hit."""

    __slots__ = ("engine", "findings", "skip_fields")

    def __init__(self, engine: Engine, skip_fields: frozenset[str]) -> None:
        self.engine = engine
        self.skip_fields = skip_fields
        self.findings: Findings | None = None

    @property
    def score(self) -> int:
        return 0 if self.findings is None else self.findings.score

    def add(self, rules: Iterable[Rule], where: str) -> None:
        if self.findings is None:
            self.findings = Findings()
        self.findings.add(rules, where)

    def text(self, text: str, target: Target, where: str) -> None:
        found = self.engine.match(text, target)
        if found:
            self.add(found, where)

    def pairs(self, raw: str, target: Target, root: str) -> None:
        """A query string or form body, decoding only the pieces that need a closer look:
        a raw piece that does not trigger cannot trigger once decoded either."""
        for piece in raw.split("&"):
            if not piece:
                continue
            name, _, value = piece.partition("=")
            if _RAW_TRIGGER_FORM.search(name.lower()) is not None:
                name = unquote_plus(name)
                self.text(name, target, f"{root}:{safe_name(name)}")
            if name.lower() in self.skip_fields:
                continue
            if value and _RAW_TRIGGER_FORM.search(value.lower()) is not None:
                self.text(unquote_plus(value), target, f"{root}:{safe_name(name)}")

    def json(self, document: Any, root: str) -> None:
        match, skip = self.engine.match, self.skip_fields
        # Locations are linked (parent, key) pairs, rendered only for a finding: most
        # strings match nothing and building every JSON path would cost more than the scan.
        # The plain-word test is inlined: it settles most keys and values of a document.
        stack: list[tuple[Any, _Location]] = [(document, root)]
        while stack:  # not recursive: orjson accepts nesting deeper than Python's stack
            node, where = stack.pop()
            if type(node) is dict:
                for key, value in node.items():
                    if not (key.isalnum() or key.isidentifier()):
                        found = match(key, Target.BODY)
                        if found:
                            self.add(found, _render((where, key)))
                    kind = type(value)
                    if kind is str:
                        if not (value.isalnum() or value.isidentifier()):
                            if key.lower() in skip:
                                continue
                            found = match(value, Target.BODY)
                            if found:
                                self.add(found, _render((where, key)))
                    elif (kind is dict or kind is list) and key.lower() not in skip:
                        stack.append((value, (where, key)))
            elif type(node) is list:
                for i, item in enumerate(node):
                    kind = type(item)
                    if kind is str:
                        found = match(item, Target.BODY)
                        if found:
                            self.add(found, _render((where, i)))
                    elif kind is dict or kind is list:
                        stack.append((item, (where, i)))
            elif type(node) is str:
                found = match(node, Target.BODY)
                if found:
                    self.add(found, _render(where))

    def json_text(self, body: bytes, root: str) -> None:
        # Parsing first is cheaper than a trigger search over the raw text: orjson takes
        # ~1 us for a cart item, and most keys and values are plain words.
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.text(body.decode("utf-8", "replace"), Target.BODY, root)
            return
        self.json(document, root)

    def json_tokens(self, prefix: bytes, root: str) -> None:
        """The string tokens in the first bytes of a JSON body too big to inspect whole
        (a prefix does not parse; its complete strings do, one by one)."""
        for token in _JSON_STRING.findall(prefix):
            try:
                text = orjson.loads(token)
            except orjson.JSONDecodeError:
                text = token.decode("utf-8", "replace")
            self.text(str(text), Target.BODY, f"{root}:prefix")

    def body(self, media_type: str, body: bytes, complete: bool) -> None:
        if not body:
            return
        if media_type in NDJSON_TYPES:
            lines = body.split(b"\n")
            if not complete:
                lines.pop()  # the last line is cut short: not scanned
            for number, line in enumerate(lines, 1):
                if line.strip():
                    self.json_text(line, f"body:line {number}:$")
        elif media_type == FORM_TYPE:
            self.pairs(body.decode("utf-8", "replace"), Target.BODY, "body")
        elif _is_json(media_type):
            if complete:
                self.json_text(body, "body:$")
            else:
                self.json_tokens(body, "body")
        else:
            self.text(body.decode("utf-8", "replace"), Target.BODY, "body")


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


# ---------------------------------------------------------------------------- middleware


class _Request:
    """What the WAF reads from a request's scope, in one pass over the headers. Defaults
    live on the class: most requests set two or three of these, and each instance
    attribute costs time on every request."""

    request_id = ""
    media_type = ""
    charset = ""
    content_length: int | None = None
    chunked = False
    user_agent = ""
    header_bytes = 0
    limit = 0
    scanned_headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path

    def may_have_body(self) -> bool:
        if self.content_length is not None:
            return self.content_length > 0
        # No length: chunked, or a protocol (HTTP/2) that does not send one; a GET or HEAD
        # without either has no body in HTTP/1.1.
        return self.chunked or self.method not in ("GET", "HEAD", "OPTIONS")


_READ_HEADERS = frozenset(
    {b"content-type", b"content-length", b"transfer-encoding", b"user-agent", b"x-request-id"}
)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


_Refusal = tuple[int, str, str, dict[str, str]]


class Waf:
    """The web application firewall (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        settings: WafSettings | None = None,
        audit_logger: logging.Logger = AUDIT_LOGGER,
    ) -> None:
        self.app = app
        self.settings = settings if settings is not None else WafSettings()
        self.audit = audit_logger
        self.engine = Engine(self.settings.paranoia_level)
        self._allow = ", ".join(sorted(self.settings.allowed_methods))
        self._scan_headers = self.settings.paranoia_level >= 2

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.settings.enabled:
            await self.app(scope, receive, send)
            return
        request = self._read_scope(scope)
        refusal = self._check_limits(scope, request)
        if refusal is not None:
            await self._refuse(scope, send, request, *refusal)
            return
        scanner = Scanner(self.engine, self.settings.skip_fields)
        self._scan_target(scope, request, scanner)
        if scanner.score >= self.settings.anomaly_threshold:
            await self._block(scope, send, request, scanner)
            return
        if request.may_have_body():
            await self._with_body(scope, receive, send, request, scanner)
        else:
            await self.app(scope, receive, send)

    # -- the request line and headers

    def _read_scope(self, scope: Scope) -> _Request:
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        request = _Request(scope["method"], path)
        headers = scope["headers"]
        size = 0
        for name, value in headers:
            size += len(name) + len(value)
            if name in _READ_HEADERS:
                self._read_header(request, name, value)
        request.header_bytes = size
        if self._scan_headers:
            request.scanned_headers = tuple(
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in headers
                if name not in _NEVER_SCANNED
            )
        return request

    @staticmethod
    def _read_header(request: _Request, name: bytes, value: bytes) -> None:
        if name == b"content-type":
            request.media_type, request.charset = _media_type(value)
        elif name == b"content-length":
            request.content_length = int(value) if value.strip().isdigit() else None
        elif name == b"transfer-encoding":
            request.chunked = True
        elif name == b"user-agent":
            request.user_agent = value.decode("latin-1")
        elif name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SAFE_REQUEST_ID.fullmatch(candidate):
                request.request_id = candidate

    def _check_limits(self, scope: Scope, request: _Request) -> _Refusal | None:
        s = self.settings
        if request.method not in s.allowed_methods:
            detail = f"the method {request.method[:16]!r} is not allowed"
            return (405, "method_not_allowed", detail, {"Allow": self._allow})
        raw_path: bytes = scope.get("raw_path") or request.path.encode()
        query: bytes = scope.get("query_string", b"")
        if len(raw_path) + (len(query) + 1 if query else 0) > s.max_url_chars:
            return (414, "uri_too_long", f"URLs are limited to {s.max_url_chars} characters", {})
        if len(scope["headers"]) > s.max_header_count:
            detail = f"requests are limited to {s.max_header_count} headers"
            return (431, "request_header_fields_too_large", detail, {})
        if request.header_bytes > s.max_header_bytes:
            detail = f"request headers are limited to {s.max_header_bytes} bytes"
            return (431, "request_header_fields_too_large", detail, {})
        if request.may_have_body():
            request.limit = limit = s.body_limit(request.path)
            if request.content_length is not None and request.content_length > limit:
                return _too_large(limit)
        if (request.content_length or request.chunked) and not self._type_allowed(request):
            return self._unsupported()
        return None

    def _type_allowed(self, request: _Request) -> bool:
        media_type = request.media_type
        known = media_type in self.settings.allowed_content_types or (
            self.settings.allow_json_suffix and media_type.endswith("+json") and "/" in media_type
        )
        return known and request.charset in ("", "utf-8", "utf8", "us-ascii")

    def _unsupported(self) -> _Refusal:
        allowed = sorted(self.settings.allowed_content_types)
        suffix = " or any +json type" if self.settings.allow_json_suffix else ""
        detail = f"request bodies must be one of {', '.join(allowed)}{suffix}, in UTF-8"
        return (415, "unsupported_media_type", detail, {})

    def _scan_target(self, scope: Scope, request: _Request, scanner: Scanner) -> None:
        scanner.text(request.path, Target.PATH, "path")
        query: bytes = scope.get("query_string", b"")
        if query:
            scanner.pairs(query.decode("latin-1"), Target.QUERY, "query")
        if request.user_agent:
            found = self.engine.user_agent(request.user_agent)
            if found:
                scanner.add(found, "header:user-agent")
        for name, value in request.scanned_headers:
            scanner.text(value, Target.HEADERS, f"header:{safe_name(name)}")

    # -- the body

    async def _with_body(
        self, scope: Scope, receive: Receive, send: Send, request: _Request, scanner: Scanner
    ) -> None:
        limit = request.limit
        cap = self.settings.inspect_body_bytes
        buffered: list[Message] = []
        size = 0
        more = True
        while more and size <= cap:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            size += len(message.get("body", b""))
            if size > limit:
                await self._refuse(scope, send, request, *_too_large(limit))
                return
            buffered.append(message)
            more = bool(message.get("more_body", False))
        body = buffered[0].get("body", b"") if len(buffered) == 1 else _join(buffered)
        if body and not self._type_allowed(request):
            await self._refuse(scope, send, request, *self._unsupported())
            return
        scanner.body(request.media_type, body[:cap], complete=not more and size <= cap)
        if scanner.score >= self.settings.anomaly_threshold:
            await self._block(scope, send, request, scanner)
            return
        if not more:
            await self.app(scope, _replay(buffered, receive), send)
            return
        await self._streaming(scope, receive, send, request, buffered, size, limit)

    async def _streaming(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: _Request,
        buffered: list[Message],
        size: int,
        limit: int,
    ) -> None:
        """The rest of a body bigger than the inspection limit: passed on as it comes,
        counted, and cut at the body limit (the app then sees the client go away)."""
        pending = iter(buffered)
        done = cut = started = False

        async def counting() -> Message:
            nonlocal size, done, cut
            message = next(pending, None)
            if message is not None:
                return message
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request" and not done:
                size += len(message.get("body", b""))
                if size > limit:
                    cut = True
                    return {"type": "http.disconnect"}
                done = not message.get("more_body", False)
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if cut and not started:
                return  # the app's answer to a cut body is dropped; the 413 goes out instead
            started = True
            await send(message)

        try:
            await self.app(scope, counting, guarded)
        except ClientDisconnect:
            if not cut:
                raise
        if cut and not started:
            await self._refuse(scope, send, request, *_too_large(limit))

    # -- answers

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        request: _Request,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str],
    ) -> None:
        request_id = _request_id(request)
        self._log(scope, request, status, code, None)
        response = problem(
            status,
            code,
            detail,
            None,
            {**headers, "X-Request-Id": request_id},
            request_id=request_id,
        )
        await response(scope, _no_receive, send)

    async def _block(self, scope: Scope, send: Send, request: _Request, scanner: Scanner) -> None:
        findings = scanner.findings
        assert findings is not None  # a score above zero means something matched
        request_id = _request_id(request)
        _, rules = findings.blocking(self.settings.anomaly_threshold)
        self._log(scope, request, 403, ErrorCode.REQUEST_BLOCKED.value, findings)
        response = problem(
            403,
            ErrorCode.REQUEST_BLOCKED.value,
            "the request was blocked by the web application firewall",
            None if "path" in findings.by_location else request.path,
            {"X-Request-Id": request_id},
            rules=sorted(rules),
            categories=_categories(rules),
            request_id=request_id,
        )
        await response(scope, _no_receive, send)

    def _log(
        self,
        scope: Scope,
        request: _Request,
        status: int,
        reason: str,
        findings: Findings | None,
    ) -> None:
        path_matched = findings is not None and "path" in findings.by_location
        entry: dict[str, Any] = {
            "event": "waf.block",
            "request_id": request.request_id,
            "status": status,
            "reason": reason,
            "method": request.method[:16],
            # The path of a request refused for its path is withheld: it is the payload.
            "path": None if path_matched else request.path[:256],
            "client": _client(scope),
            "paranoia_level": self.settings.paranoia_level,
        }
        forwarded = _forwarded_for(scope)
        if forwarded:
            entry["forwarded_for"] = forwarded
        if findings is not None:
            locations, rules = findings.blocking(self.settings.anomaly_threshold)
            entry |= {
                "rules": sorted(rules),
                "categories": _categories(rules),
                "score": findings.score,
                "threshold": self.settings.anomaly_threshold,
                "locations": locations[:_MAX_LOCATIONS],
            }
        self.audit.warning(orjson.dumps(entry).decode())


def _request_id(request: _Request) -> str:
    if not request.request_id:
        request.request_id = new_request_id()
    return request.request_id


def _categories(rules: Mapping[str, Rule]) -> list[str]:
    return sorted({str(rule.category) for rule in rules.values()})


def _join(messages: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending: Iterator[Message] = iter(messages)

    async def replaying() -> Message:
        message = next(pending, None)
        return message if message is not None else await receive()

    return replaying


def _too_large(limit: int) -> _Refusal:
    return (413, "payload_too_large", f"request bodies here are limited to {limit} bytes", {})


@functools.lru_cache(maxsize=256)
def _media_type(value: bytes) -> tuple[str, str]:
    """(media type, charset) of a Content-Type (clients send the same few again and again)."""
    media_type, _, params = value.decode("latin-1").partition(";")
    return media_type.strip().lower(), _charset(params)


def _charset(params: str) -> str:
    if not params:
        return ""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return ""


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _forwarded_for(scope: Scope) -> str | None:
    """The first X-Forwarded-For hop, only if it is an IP address (it is client-supplied)."""
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            first = value.decode("latin-1").split(",")[0].strip()
            try:
                return str(ipaddress.ip_address(first))
            except ValueError:
                return None
    return None


__all__ = [
    "Category",
    "Engine",
    "Findings",
    "Scanner",
    "Waf",
    "WafSettings",
    "collapse",
    "safe_name",
    "variants",
]
