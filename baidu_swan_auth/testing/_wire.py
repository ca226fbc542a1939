"""What the fake reads and writes on the wire: form bodies in, answers and filler out.

Pure functions and values, no I/O: the request handling in ``_exchange`` sends what they make.
"""

from __future__ import annotations

import base64
import html
import http
import ipaddress
import json
import secrets
import urllib.parse
from collections.abc import Iterator

import attrs

__all__: list[str] = []  # helpers of the other testing modules; nothing public

FORM_MIME = "application/x-www-form-urlencoded"
JSON_MIME = "application/json; charset=utf-8"
HTML_MIME = "text/html; charset=utf-8"
STREAM_CHUNK = 64 * 1024


@attrs.frozen
class Reply:
    """A complete answer: status, body, ``Content-Type`` and further headers."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = attrs.Factory(dict)


@attrs.frozen
class ParsedForm:
    """The fields of a request's form body, and what was wrong with it, if anything."""

    fields: dict[str, str]
    problem: str | None


def json_reply(status: int, payload: dict[str, object], **headers: str) -> Reply:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Reply(status, body, JSON_MIME, dict(headers))


def oauth_error(status: int, error: str, description: str) -> Reply:
    return json_reply(status, {"error": error, "error_description": description})


def html_page(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = html.escape(f"{status} {phrase}")
    # Shaped like the pages nginx-style gateways send, which is what clients meet in practice.
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>fake-gateway</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


def html_reply(status: int, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, html_page(status), HTML_MIME, dict(headers or {}))


def parse_form(content_type: str, body: bytes) -> ParsedForm:
    if not body:
        return ParsedForm({}, None)
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime != FORM_MIME:
        return ParsedForm({}, f"the body must be {FORM_MIME}")
    try:
        text = body.decode("ascii")
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        return ParsedForm({}, "the form body is not valid percent-encoded UTF-8")
    fields: dict[str, str] = {}
    problem = None
    for name, value in pairs:
        if name in fields:
            # A repeated field is ambiguous (which one would Baidu use?); refuse it loudly.
            problem = f"parameter {name!r} is repeated"
            continue
        fields[name] = value
    return ParsedForm(fields, problem)


def filler(size: int) -> Iterator[bytes]:
    """``size`` bytes shaped like a JSON object (plain filler when tiny), in chunks."""
    head, tail = b'{"filler":"', b'"}'
    if size < len(head) + len(tail):
        if size:
            yield b"x" * size
        return
    remaining = size - len(head) - len(tail)
    first = min(remaining, STREAM_CHUNK)
    yield head + b"x" * first
    remaining -= first
    block = b"x" * STREAM_CHUNK
    while remaining >= STREAM_CHUNK:
        yield block
        remaining -= STREAM_CHUNK
    yield b"x" * remaining + tail


def new_session_key() -> str:
    return base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def new_openid() -> str:
    return secrets.token_urlsafe(21)


def url_host(host: str) -> str:
    """``host`` as it goes in a URL: IPv6 in brackets, "every interface" as the loopback."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        # Listening on every interface: the loopback address is the one that surely connects.
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)
