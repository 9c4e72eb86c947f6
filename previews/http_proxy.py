"""HTTP/1.1 between a client and a preview app: access tokens, cookie stripping, websockets.

One client connection is paired with one app connection, opened once the first request is let
through (an unauthorised client never reaches the app). Both stay open between requests
(keep-alive); requests on a connection are answered in order. Bodies, chunked or not, are
copied as they arrive, never buffered whole (a streaming response streams). A `101 Switching
Protocols` answer to an upgrade turns the pair into a plain two-way relay (websockets: Vite's
HMR, Next.js dev).

What the app never sees: the agent's and the platform's auth cookies (Better Auth's, Django's
`sessionid`/`csrftoken`), any preview's token cookie, and the token header or `Authorization`
that carried a preview token. What it may not set: those same cookies (a preview served on the
agent's host name could otherwise plant a session cookie there).

A message the proxy cannot frame unambiguously (both Content-Length and Transfer-Encoding, a
Transfer-Encoding other than `chunked`, differing lengths, folded headers) is answered 400 and
the connection closed: no request smuggling past the token check.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote

from django.conf import settings

from previews import tokens
from weldr_agent.auth import session_cookie_names

CHUNK = 64 * 1024
TOKEN_PARAM = "preview_token"
TOKEN_HEADER = "x-weldr-preview-token"
COOKIE_PREFIX = "weldr_preview_"
PUBLIC, TOKEN = "public", "token"
# A client connection that sends no request for this long (first or next) is closed: it holds
# one of its port's and its address's places (PREVIEW_MAX_CONNECTIONS_*).
IDLE_SECONDS = 60.0

Target = Callable[[], "tuple[str, int] | None"]
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# (None, 0): no body; ("length", n); ("chunked", 0); ("close", 0): until the app closes.
Framing = tuple["str | None", int]


@dataclass
class Route:
    """What one preview port serves: the app's address and who may reach it."""

    port: int
    target: Target
    bucket: str = ""
    access: str = PUBLIC


class BadMessage(Exception):
    """A message that cannot be framed or parsed without guessing."""


class NoAnswer(ConnectionError):
    """The app closed the connection before answering at all (an idle keep-alive it dropped)."""


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------

class Message:
    """A request or response head: its first line and its headers, in order."""

    __slots__ = ("start", "headers")

    def __init__(self, head: bytes) -> None:
        # A bare CR or LF is a line break to some parsers and not to others: a header hidden
        # from the proxy behind one could frame the app's view of the request differently.
        if head.count(b"\n") != head.count(b"\r\n") or head.count(b"\r") != head.count(b"\n"):
            raise BadMessage("bare CR or LF in the message head")
        lines = head.decode("latin-1").split("\r\n")
        self.start = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name.strip() != name or line[0] in " \t":
                raise BadMessage("malformed header line")
            self.headers.append((name, value.strip()))

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name]

    def get(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None

    def tokens(self, name: str) -> set[str]:
        """A comma-separated header's values, lower case (`Connection: keep-alive, Upgrade`)."""
        return {part.strip().lower() for value in self.values(name) for part in value.split(",")}

    def encode(self) -> bytes:
        lines = [self.start, *(f"{name}: {value}" for name, value in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _length_framing(message: Message) -> Framing | None:
    encodings = message.values("transfer-encoding")
    lengths = message.values("content-length")
    if encodings:
        if lengths or ",".join(encodings).strip().lower() != "chunked":
            raise BadMessage("ambiguous or unsupported transfer encoding")
        return ("chunked", 0)
    if lengths:
        values = {value.strip() for value in ",".join(lengths).split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise BadMessage("bad Content-Length")
        return ("length", int(values.pop()))
    return None


def request_framing(request: Message) -> Framing:
    return _length_framing(request) or (None, 0)


def response_framing(response: Message, *, method: str) -> Framing:
    status = response.start[9:12]
    if method == "HEAD" or status in ("204", "304") or status.startswith("1"):
        return (None, 0)
    return _length_framing(response) or ("close", 0)


# ---------------------------------------------------------------------------------------------
# Bodies and relays
# ---------------------------------------------------------------------------------------------

async def _copy_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        count: int) -> None:
    while count > 0:
        data = await reader.read(min(count, CHUNK))
        if not data:
            raise ConnectionError("the message ended early")
        writer.write(data)
        count -= len(data)
        await writer.drain()


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Chunk by chunk as each arrives (an event stream's events are not held back)."""
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadMessage("bad chunk size") from None
        writer.write(line)
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                writer.write(trailer)
            writer.write(trailer)
            await writer.drain()
            return
        await _copy_exactly(reader, writer, size + 2)


async def copy_body(framing: Framing, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
    kind, length = framing
    if kind == "length":
        await _copy_exactly(reader, writer, length)
    elif kind == "chunked":
        await _copy_chunked(reader, writer)
    elif kind == "close":
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes one way until the end of the stream, which is passed on (half-close)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            writer.close()


async def relay(one: Streams, other: Streams) -> None:
    """Both ways at once until both ends are done: a TCP proxy, and a websocket after 101."""
    await asyncio.gather(pipe(one[0], other[1]), pipe(other[0], one[1]))


# ---------------------------------------------------------------------------------------------
# Cookies and tokens
# ---------------------------------------------------------------------------------------------

def _reserved(name: str) -> bool:
    """A cookie the app must neither receive nor set: the agent's, the platform's, a token."""
    prefix = settings.BETTER_AUTH_COOKIE_PREFIX + "."
    bare = name.removeprefix("__Secure-").removeprefix("__Host-")
    return (name in session_cookie_names() or bare.startswith(prefix)
            or name in (settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME)
            or name.startswith(COOKIE_PREFIX))


def cookie_name(port: int) -> str:
    # Cookies are not scoped by port: on one host name each preview's cookie needs its own name.
    return f"{COOKIE_PREFIX}{port}"


def _strip_cookies(request: Message, port: int) -> str | None:
    """Drop reserved cookies from the request; return this preview's token cookie, if any."""
    found = None
    headers: list[tuple[str, str]] = []
    for name, value in request.headers:
        if name.lower() != "cookie":
            headers.append((name, value))
            continue
        kept = []
        for pair in value.split(";"):
            cookie, _, cookie_value = pair.partition("=")
            cookie = cookie.strip()
            if cookie == cookie_name(port):
                found = cookie_value.strip().strip('"')
            if cookie and not _reserved(cookie):
                kept.append(pair.strip())
        if kept:
            headers.append((name, "; ".join(kept)))
    request.headers = headers
    return found


def _strip_token_headers(request: Message) -> str | None:
    """Drop the token header, and `Authorization` when it carries a preview token; return it."""
    found = None
    headers: list[tuple[str, str]] = []
    for name, value in request.headers:
        lower = name.lower()
        if lower == TOKEN_HEADER:
            found = value
            continue
        if lower == "authorization" and value[:7].lower() == "bearer " \
                and value[7:].strip().startswith(tokens.PREFIX):
            found = found or value[7:].strip()
            continue
        headers.append((name, value))
    request.headers = headers
    return found


def _strip_set_cookies(response: Message) -> None:
    response.headers = [(name, value) for name, value in response.headers
                        if name.lower() != "set-cookie"
                        or not _reserved(value.split("=", 1)[0].strip())]


def _split_token_param(target: str) -> tuple[str, str | None]:
    """The target without `preview_token=…`, and the token (None when there is none)."""
    path, mark, query = target.partition("?")
    if not mark or TOKEN_PARAM not in query:
        return target, None
    token, kept = None, []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == TOKEN_PARAM:
            token = unquote(value)
        else:
            kept.append(part)
    return (path + ("?" + "&".join(kept) if kept else "")), token


# ---------------------------------------------------------------------------------------------
# Answers of the proxy itself
# ---------------------------------------------------------------------------------------------

TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          502: "Bad Gateway"}


def page(status: int, message: str, *, close: bool) -> bytes:
    """A small HTML page of the proxy's own (never the app's)."""
    title = TITLES[status]
    body = (f"<!doctype html><title>{status} {title}</title><h1>{title}</h1>"
            f"<p>{html.escape(message)}</p>\n").encode()
    return (f"HTTP/1.1 {status} {title}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Cache-Control: no-store\r\nX-Weldr-Preview-Proxy: refused\r\n"
            f"Content-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def _redirect(location: str, *, cookie: str, close: bool) -> bytes:
    return (f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nSet-Cookie: {cookie}\r\n"
            "Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nContent-Length: 0\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode("latin-1")


def _host_error(route: Route, request: Message) -> str | None:
    """With PREVIEW_DOMAIN, a port serves only its own preview's host name."""
    if not settings.PREVIEW_DOMAIN:
        return None
    host = (request.get("host") or "").lower()
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    expected = f"{route.bucket}-{route.port}.{settings.PREVIEW_DOMAIN}"
    return None if name == expected else f"No preview is served at {host or 'this address'}."


class Gate:
    """Who may pass, per client connection (tokens already checked are not checked again)."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.checked: dict[str, tokens.Claims] = {}

    def refusal(self, request: Message, *, close: bool) -> bytes | None:
        """The proxy's own answer to `request`, or None to forward it (tokens stripped)."""
        route = self.route
        host_error = _host_error(route, request)
        if host_error is not None:
            return page(404, host_error, close=close)
        cookie = _strip_cookies(request, route.port)
        header = _strip_token_headers(request)
        if route.access != TOKEN:
            return None
        method, _, rest = request.start.partition(" ")
        target, _, version = rest.rpartition(" ")
        kept, in_url = _split_token_param(target)
        token = in_url if in_url is not None else header or cookie
        if token is None:
            return page(401, "This preview is private: open it with a preview link "
                        "(POST /previews/{bucket}/tokens).", close=close)
        claims = self.checked.get(token)
        if claims is None or claims.expires <= time.time():
            try:
                claims = tokens.token_check(token, bucket=route.bucket, port=route.port)
            except tokens.TokenRefused as refused:
                return page(refused.status, f"Preview access refused: {refused.reason}.",
                            close=close)
            if claims.kind != tokens.ONE_SHOT:
                self.checked[token] = claims
        if in_url is not None:
            return _redirect(kept, cookie=self._cookie(request, claims), close=close)
        return None

    def _cookie(self, request: Message, claims: tokens.Claims) -> str:
        """The preview's own cookie: a token of its own kind, so a one-shot link stays spent."""
        expires = claims.expires
        value, _ = tokens.token_mint(bucket=self.route.bucket, port=self.route.port,
                                     ttl_seconds=0, kind=tokens.COOKIE, expires=expires)
        secure = (request.get("x-forwarded-proto") or "").lower() == "https"
        return (f"{cookie_name(self.route.port)}={value}; Path=/; "
                f"Max-Age={max(1, expires - int(time.time()))}; HttpOnly; SameSite=Lax"
                + ("; Secure" if secure else ""))


# ---------------------------------------------------------------------------------------------
# One client connection
# ---------------------------------------------------------------------------------------------

def _wants_close(message: Message) -> bool:
    connection = message.tokens("connection")
    if message.start.startswith("HTTP/1.0") or message.start.endswith("HTTP/1.0"):
        return "keep-alive" not in connection
    return "close" in connection


async def _exchange(request: Message, framing: Framing, client: Streams,
                    upstream: Streams) -> bool:
    """Forward one request and its answer; False when the connection pair ends with it."""
    client_reader, client_writer = client
    up_reader, up_writer = upstream
    up_writer.write(request.encode())
    sending = None
    if framing[0] is not None:
        if "100-continue" in request.tokens("expect"):
            # The client sends its body only after the app's `100 Continue`.
            sending = asyncio.ensure_future(copy_body(framing, client_reader, up_writer))
        else:
            await copy_body(framing, client_reader, up_writer)
    method = request.start.split(" ", 1)[0]
    try:
        head = await up_reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            raise NoAnswer() from None
        raise
    while True:
        response = Message(head)
        status = response.start[9:12]
        if not (status.startswith("1") and status != "101"):
            break
        client_writer.write(head)
        head = await up_reader.readuntil(b"\r\n\r\n")
    if status == "101" and "upgrade" in request.tokens("connection"):
        client_writer.write(head)
        await relay(client, upstream)
        return False
    _strip_set_cookies(response)
    body = response_framing(response, method=method)
    # The pair lives or ends together: a closing app ends the client's connection too.
    keep = not _wants_close(request) and not _wants_close(response) and body[0] != "close"
    if not keep and "close" not in response.tokens("connection") and body[0] != "close":
        response.headers.append(("Connection", "close"))
    client_writer.write(response.encode())
    await copy_body(body, up_reader, client_writer)
    if sending is not None:
        await sending
    return keep


async def serve(route: Route, client: Streams,
                connect: Callable[[], Awaitable[Streams | None]]) -> None:
    """Requests of one client connection until either side closes."""
    reader, writer = client
    gate = Gate(route)
    upstream: Streams | None = None
    try:
        while True:
            try:
                async with asyncio.timeout(IDLE_SECONDS):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, TimeoutError):
                return
            except asyncio.LimitOverrunError:
                writer.write(page(400, "Request head too large.", close=True))
                return
            try:
                request = Message(head)
                if len(request.start.split(" ")) != 3 or request.start[-9:] not in (
                        " HTTP/1.1", " HTTP/1.0"):
                    raise BadMessage("not an HTTP/1.x request line")
                framing = request_framing(request)
            except BadMessage as error:
                writer.write(page(400, str(error), close=True))
                return
            # A refused request's body is not read: the connection ends with the answer.
            close = _wants_close(request) or framing[0] is not None
            answer = gate.refusal(request, close=close)
            if answer is not None:
                writer.write(answer)
                if close:
                    return
                continue
            # Apps drop idle keep-alive connections (node after 5 s): a new one then.
            if upstream is not None and (upstream[0].at_eof() or upstream[1].is_closing()):
                upstream[1].close()
                upstream = None
            reused = upstream is not None
            if upstream is None:
                upstream = await connect()
                if upstream is None:
                    writer.write(page(502, "The preview is not running.", close=True))
                    return
            try:
                try:
                    keep = await _exchange(request, framing, client, upstream)
                except NoAnswer:
                    # Dropped as the request went out; only a request without a body can be
                    # sent again (its body is gone).
                    upstream[1].close()
                    upstream = await connect() if reused and framing[0] is None else None
                    if upstream is None:
                        writer.write(page(502, "The app closed the connection.", close=True))
                        return
                    keep = await _exchange(request, framing, client, upstream)
            except BadMessage as error:
                writer.write(page(502, f"The app's answer was malformed ({error}).", close=True))
                return
            if not keep:
                return
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return
    finally:
        writer.close()
        if upstream is not None:
            upstream[1].close()
