"""Keeping secrets out of reprs, logs, stats and errors."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["mask_url"]

_SECRET_PARAMS = {"password", "pass", "pwd", "token", "auth", "secret", "key"}


def mask_url(url: str) -> str:
    """``url`` with its password (and any secret-looking query value) replaced by ``***``.

    A URL that does not even parse is replaced whole: it may hold a secret in a place
    the parser could not find.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    netloc = host
    if ":" in host:  # IPv6
        netloc = f"[{host}]"
    if port is not None:
        netloc += f":{port}"
    if parts.username or parts.password:
        user = parts.username or ""
        netloc = f"{user}:***@{netloc}" if parts.password else f"{user}@{netloc}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
        )
    # Built by hand: urlunsplit drops the "//" of an empty host (unix:///path).
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
