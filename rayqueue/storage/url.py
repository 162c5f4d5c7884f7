"""Journal URLs: which journals are PostgreSQL ones, and how to show one without its
password (no database driver imported here)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

#: URL schemes that name a PostgreSQL journal.
SCHEMES = ("postgresql", "postgres")


def is_postgres_url(journal: object) -> bool:
    """Whether ``journal`` names a PostgreSQL journal (``postgresql://...``)."""
    return isinstance(journal, str) and "://" in journal and \
        journal.split("://", 1)[0].lower() in SCHEMES


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for logs and errors."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "postgresql://(unparsable URL hidden)"


def shown(journal: str | None) -> str:
    """A journal as logs and messages show it: a URL without its password, a path as
    it is, ``memory`` for None."""
    if journal is None:
        return "memory"
    return redact(journal) if is_postgres_url(journal) else journal
