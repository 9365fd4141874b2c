"""Declared endpoints: one `Route` per endpoint, with the types of its body, query and answer
(the body's and the answer's are its handler's annotations, unless the route names them).

The same declarations validate requests (msgspec, strict: unknown fields and wrong types
are refused) and generate the OpenAPI document, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import re
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from sup.domain.accounts import Principal
from sup.domain.limits import Family
from sup.errors import Code, DomainError
from sup.http.problems import Problem
from sup.ids import canonical_id
from sup.integers import parse_int
from sup.transport.inputs import ID_REGEX, Id, whole
from sup.transport.services import SERVICES, Services

JSON_TYPE = "application/json"
_PATH_PARAM = re.compile(r"{(\w+)}")
ME = "me"  # stands for the caller's own id wherever a path has {user_id}
ADMIN_PATHS = "/api/v1/admin/"
# Words a path may hold where an id goes: `me` (resolved here) and `close-friends`, my close-friends
# list, which exists before it has an id (the stories service resolves it).
ID_ALIASES = {"user_id": (ME, "Yourself."), "list_id": ("close-friends", "My close-friends list.")}
# A \u0000 escape not itself escaped: NUL has no place in any field, and Postgres refuses it.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _no_nul() -> DomainError:
    return DomainError(Code.VALIDATION_FAILED, "Text must not contain NUL characters.")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[..., Awaitable[Any]]
    body: type | None = None  # None: the handler's annotation (see __post_init__)
    query: type | None = None
    response: type | None = None  # None: likewise
    status: int = 200
    auth: bool = True
    tag: str = "misc"
    # Types of path parameters other than ids (ids are the `..._id` ones), for the OpenAPI document.
    params: dict[str, Any] = field(default_factory=dict)
    # Other success statuses with the same answer (200 when a create finds what exists already).
    also: tuple[int, ...] = ()
    # Bodies and answers that are not JSON (files), as OpenAPI `content` and `responses`: no type
    # validates them, so they are declared where the route is.
    raw_body: dict[str, Any] | None = None
    raw_responses: dict[str, Any] | None = None
    # The handler takes the aiohttp request and answers by itself (the WebSocket upgrade): no
    # body, query or token parsing here, and its OpenAPI entry only points to its protocol.
    raw: bool = False
    # For server administrators only: to anyone else the path does not exist (404), whatever they send.
    admin: bool = False
    # The rate-limit budget it spends (docs/operations.md#rate-limits); None: the general one, per
    # user when the route needs one, else per client address.
    limit: Family | None = None

    def __post_init__(self) -> None:
        # The body and the answer are the handler's own annotations unless the row says otherwise, so a
        # type is written once; a handler that answers with an aiohttp response declares its `response`.
        if self.raw:
            return
        body, response = _annotated(self.handler)
        if self.body is None:
            object.__setattr__(self, "body", body)
        if self.response is None:
            object.__setattr__(self, "response", response)

    @property
    def family(self) -> Family:
        if self.limit is not None:
            return self.limit
        return Family.REQUESTS if self.auth or self.admin else Family.ANONYMOUS

    @property
    def summary(self) -> str:
        doc = (self.handler.__doc__ or "").strip().splitlines()[0] if self.handler.__doc__ else ""
        return doc.split(": ", 1)[1] if ": " in doc else doc

    @property
    def description(self) -> str:
        """The handler's docstring after its first line: the rules a client should know."""
        lines = (self.handler.__doc__ or "").strip().splitlines()[1:]
        return " ".join(line.strip() for line in lines).strip()


def _annotated(handler: Callable[..., Awaitable[Any]]) -> tuple[type | None, type | None]:
    """The type of a handler's body (its parameter after `call`) and of its JSON answer: None where it
    takes no body, and where it answers nothing (204) or an aiohttp response (a file, a chosen status)."""
    hints = typing.get_type_hints(handler)
    parameters = list(inspect.signature(handler).parameters)
    body = hints[parameters[1]] if len(parameters) > 1 else None
    answer = hints.get("return", types.NoneType)
    kinds = typing.get_args(answer) if isinstance(answer, types.UnionType) else (answer,)
    if answer is types.NoneType or any(isinstance(k, type) and issubclass(k, web.StreamResponse) for k in kinds):
        return body, None
    return body, answer


@dataclass
class Call:
    """What a handler gets: the request, the services, the caller, the parsed query."""

    request: web.Request
    services: Services
    principal: Principal | None = None
    query: Any = None
    _ip: str | None = field(default=None, repr=False)

    @property
    def who(self) -> Principal:
        assert self.principal is not None, "route declared auth=False"
        return self.principal

    def param(self, name: str) -> str:
        """A path parameter; an id (`..._id`) comes canonical, and `{user_id}` takes `me` for the caller."""
        value = self.request.match_info[name]
        if is_id_param(name):
            if value == ME and name == "user_id" and self.principal is not None:
                return self.principal.user_id
            if name in ID_ALIASES and value == ID_ALIASES[name][0]:
                return value
            canonical = canonical_id(value)
            if canonical is None:  # the route's pattern keeps these out; a handler called otherwise
                raise DomainError(Code.NOT_FOUND, "There is nothing at this path.")
            return canonical
        if "\x00" in value:
            raise _no_nul()
        return value

    def int_param(self, name: str, high: int) -> int:
        """A path parameter that is a whole number from 0 to `high`."""
        return parse_int(self.request.match_info[name], name, high=high)

    @property
    def ip(self) -> str:
        if self._ip is None:
            self._ip = client_ip(self.request, self.services.trusted_proxies)
        return self._ip


def is_id_param(name: str) -> bool:
    return name.endswith("_id")


def router_path(path: str) -> str:
    """`path` as aiohttp matches it: an id parameter matches only an id (or `me` for {user_id}).

    So a fixed segment never falls into a parameter: `GET /media/uploads` is not `GET
    /media/{media_id}` with the id "uploads", and its 405 names the methods of `/media/uploads` only.
    """

    def typed(match: re.Match[str]) -> str:
        name = match[1]
        if not is_id_param(name):
            return match[0]
        alias = ID_ALIASES.get(name)
        return f"{{{name}:{re.escape(alias[0])}|{ID_REGEX}}}" if alias else f"{{{name}:{ID_REGEX}}}"

    return _PATH_PARAM.sub(typed, path)


def client_ip(request: web.Request, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> str:
    """The peer address, or the first untrusted hop of X-Forwarded-For behind trusted proxies."""
    peer = request.remote or "unknown"
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return peer


def request_origin(request: web.Request, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> str:
    """`scheme://host` as the client asked for it: behind a trusted proxy, with its X-Forwarded-Proto.

    The proxy terminates TLS, so the request SUP sees is plain http. The host is the Host header,
    which the proxy passes on (nginx: `Host $host`); X-Forwarded-Host is not read, so one header
    fewer is believed. Behind a proxy that rewrites Host, set server.public_url.
    """
    scheme = request.scheme
    if trusted and _in(request.remote or "", trusted):
        # The value of the proxy next to SUP comes last, if a chain appended theirs.
        forwarded = request.headers.get("X-Forwarded-Proto", "").rsplit(",", 1)[-1].strip().lower()
        if forwarded in {"http", "https"}:
            scheme = forwarded
    return f"{scheme}://{request.host}"


def _in(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=encode(value), status=status, content_type=JSON_TYPE)


async def read_json(request: web.Request, body_type: type, max_bytes: int) -> Any:
    if request.content_length is not None and request.content_length > max_bytes:
        raise DomainError(Code.BODY_TOO_LARGE, f"The request body is larger than {max_bytes} bytes.")
    content_type = request.headers.get("Content-Type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if content_type and not (media_type == JSON_TYPE or media_type.endswith("+json")):
        raise DomainError(Code.UNSUPPORTED_MEDIA_TYPE, "Send the body as application/json.")
    raw = await request.read()  # aiohttp stops at client_max_size with 413
    if not raw.strip():
        raise DomainError(Code.INVALID_REQUEST, "A JSON body is required.")
    if b"\\u0000" in raw and _NUL_ESCAPE.search(raw):
        raise _no_nul()
    try:
        return msgspec.json.decode(raw, type=body_type)
    except msgspec.ValidationError as exc:
        # Decoding validates as it parses, so a schema error can come before a syntax error
        # further on; only on this (error) path, parse again untyped to report the right one.
        try:
            untyped = msgspec.json.decode(raw)
        except msgspec.DecodeError as syntax:
            raise _malformed(syntax) from None
        if "got `float`" in str(exc):
            # JSON Schema counts 5.0 and 5e0 as integers, so a client generated from our schema
            # may send them: take a whole number however it is written (5.5 is still refused).
            try:
                return msgspec.json.decode(msgspec.json.encode(_whole_numbers(untyped)), type=body_type)
            except msgspec.ValidationError as again:
                exc = again
        raise DomainError(Code.VALIDATION_FAILED, _describe(exc), **_field(exc)) from None
    except msgspec.DecodeError as exc:
        raise _malformed(exc) from None
    except UnicodeDecodeError as exc:  # invalid UTF-8 inside a string: msgspec lets it through
        raise _malformed(exc) from None


def _whole_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _malformed(exc: Exception) -> DomainError:
    return DomainError(Code.MALFORMED_JSON, f"The body is not valid JSON: {exc}")


def read_query(request: web.Request, query_type: type) -> Any:
    values: dict[str, Any] = {key: request.query.getone(key) for key in request.query}
    if any("\x00" in key or "\x00" in value for key, value in values.items()):
        raise _no_nul()
    # msgspec would take "1e3", "1.0" and numbers past what the database holds: integers go
    # through the one strict parser first, then the schema's own bounds apply.
    for name in _int_fields(query_type) & values.keys():
        values[name] = parse_int(values[name], name)
    try:
        return msgspec.convert(values, query_type, strict=False)
    except msgspec.ValidationError as exc:
        raise DomainError(Code.VALIDATION_FAILED, _describe(exc, "query"), **_field(exc)) from None


@functools.cache
def _int_fields(query_type: type) -> frozenset[str]:
    """The fields of a query type that hold an integer (or an optional one)."""
    info = msgspec.inspect.type_info(query_type)
    assert isinstance(info, msgspec.inspect.StructType), query_type
    return frozenset(
        f.encode_name for f in info.fields if any(isinstance(t, msgspec.inspect.IntType) for t in _members(f.type))
    )


def _members(info: msgspec.inspect.Type) -> tuple[msgspec.inspect.Type, ...]:
    return info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)


_AT = re.compile(r" - at `\$(?:\.([\w.\[\]]+))?`$")


def _describe(exc: msgspec.ValidationError, where: str = "body") -> str:
    message = str(exc)
    match = _AT.search(message)
    if match and match.group(1):
        return f"{match.group(1)}: {_AT.sub('', message)}"
    return f"{where}: {_AT.sub('', message)}"


def _field(exc: msgspec.ValidationError) -> dict[str, str]:
    match = _AT.search(str(exc))
    return {"field": match.group(1)} if match and match.group(1) else {}


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError(Code.UNAUTHENTICATED, "Send an access token: Authorization: Bearer <token>.")
    return token.strip()


async def admin_principal(request: web.Request) -> Principal:
    """The administrator calling; 404 for anyone else, as for a path that does not exist."""
    try:
        token: str | None = bearer_token(request)
    except DomainError:
        token = None  # no 401 either: it would say that something is here
    return await request.app[SERVICES].accounts.authenticate_admin(token)


@web.middleware
async def hide_admin_paths(request: web.Request, handler: Any) -> web.StreamResponse:
    """An admin path with a method it does not take: 405 for administrators, 404 for everyone else.

    The router answers 405 before any handler runs, and its Allow header would show a stranger
    that the path exists.
    """
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed:
        if request.path.startswith(ADMIN_PATHS):
            await admin_principal(request)
        raise


def endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    family = route.family

    async def handle(request: web.Request) -> web.StreamResponse:
        services = request.app[SERVICES]
        call = Call(request, services)
        if route.admin:  # before the body and query are read: no 422 tells a stranger the path exists
            call.principal = await admin_principal(request)
        elif route.auth:
            call.principal = await services.accounts.authenticate(bearer_token(request))
        # Before the body is read: a refused request costs no parsing.
        await services.limits.check(family, call.principal.user_id if call.principal else call.ip)
        if route.query is not None:
            call.query = read_query(request, route.query)
        if route.body is not None:
            body = await read_json(request, route.body, services.max_body_bytes)
            result = await route.handler(call, body)
        else:
            result = await route.handler(call)
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=204)
        return json_response(result, route.status)

    handle.__name__ = route.handler.__name__
    handle.__doc__ = route.handler.__doc__
    return handle


def limited_raw(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A raw route (the WebSocket upgrade) counted per client address before its handler runs."""
    family = route.family

    async def handle(request: web.Request) -> web.StreamResponse:
        services = request.app[SERVICES]
        await services.limits.check(family, client_ip(request, services.trusted_proxies))
        return await route.handler(request)

    handle.__name__ = route.handler.__name__
    handle.__doc__ = route.handler.__doc__
    return handle


# Rules read_json applies to every string, said in the schema where a type cannot say them.
_NO_NUL = whole("[^\\x00]*")
_BASE64 = whole("(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def _state_text_rules(schema: Any) -> None:
    """Add to every string schema within what the server requires of all text: base64 for bytes, no NUL."""
    if isinstance(schema, list):
        for item in schema:
            _state_text_rules(item)
        return
    if not isinstance(schema, dict):
        return
    for value in schema.values():
        _state_text_rules(value)
    if schema.get("type") == "string" and "pattern" not in schema and "enum" not in schema:
        schema["pattern"] = _BASE64 if schema.get("contentEncoding") == "base64" else _NO_NUL


def _path_schema(route: Route, name: str) -> dict[str, Any]:
    if is_id_param(name):
        schema = msgspec.json.schema(Id)
        alias = ID_ALIASES.get(name)
        return {"anyOf": [schema, {"const": alias[0], "description": alias[1]}]} if alias else schema
    if name in route.params:
        return msgspec.json.schema(route.params[name])
    return {"type": "string", "minLength": 1}


def openapi(routes: list[Route], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for these routes."""
    types: list[Any] = [Problem]
    for route in routes:
        types += [t for t in (route.body, route.response, route.query) if t is not None]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    for component in components.values():
        _state_text_rules(component)
    schema_of = dict(zip(types, schemas, strict=True))
    problem_ref = {"content": {"application/problem+json": {"schema": schema_of[Problem]}}}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "operationId": route.handler.__name__,
            "summary": route.summary,
            "tags": [route.tag],
            "responses": {"default": {"description": "An error (problem+json)", **problem_ref}},
        }
        if route.description:
            op["description"] = route.description
        params = [
            {"name": name, "in": "path", "required": True, "schema": _path_schema(route, name)}
            for name in _PATH_PARAM.findall(route.path)
        ]
        if route.query is not None:
            query_schema = components[route.query.__name__]
            required = set(query_schema.get("required", []))
            params += [
                {"name": name, "in": "query", "required": name in required, "schema": prop}
                for name, prop in query_schema["properties"].items()
            ]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": {JSON_TYPE: {"schema": schema_of[route.body]}}}
        elif route.raw_body is not None:
            op["requestBody"] = {"required": True, "content": route.raw_body}
        if route.raw_responses is not None:
            op["responses"].update(route.raw_responses)
        elif route.response is not None:
            for status in (route.status, *route.also):
                op["responses"][str(status)] = {
                    "description": "OK" if status == route.status else "OK: what existed already",
                    "content": {JSON_TYPE: {"schema": schema_of[route.response]}},
                }
        else:
            op["responses"]["204" if route.status == 200 else str(route.status)] = {"description": "Done"}
        if route.raw:
            op["responses"]["101"] = {"description": "Switching Protocols: see docs/protocol.md"}
            del op["responses"]["204"]
        if route.auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "SUP", "version": version, "description": "SUP messenger server API"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
