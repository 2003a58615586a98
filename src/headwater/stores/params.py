"""Query parameters of store URLs that headwater reads itself (a schema, a namespace)."""

from __future__ import annotations

from urllib.parse import quote, unquote


def split_param(url: str, name: str) -> tuple[str, str | None]:
    """The URL without its query parameter ``name``, and that parameter's (last) value.

    >>> split_param("redis://h:6379/0?namespace=shop%5Fprod&x=1", "namespace")
    ('redis://h:6379/0?x=1', 'shop_prod')
    """
    base, sep, query = url.partition("?")
    if not sep:
        return url, None
    value = None
    kept = []
    for part in query.split("&"):
        key, _, found = part.partition("=")
        if unquote(key) == name:
            value = unquote(found)
        elif part:
            kept.append(part)
    return (base + "?" + "&".join(kept) if kept else base), value


def with_param(url: str, name: str, value: str) -> str:
    """The URL with its query parameter ``name`` set to ``value`` (replacing any).

    >>> with_param("postgresql://h/db?sslmode=require&schema=a", "schema", "b")
    'postgresql://h/db?sslmode=require&schema=b'
    """
    base, _ = split_param(url, name)
    return f"{base}{'&' if '?' in base else '?'}{quote(name)}={quote(value, safe='')}"
