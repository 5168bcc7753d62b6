"""Credentials out of what ablate prints and stores: URLs shown without their password, text scrubbed of them."""

from __future__ import annotations

import re


def redact(url: str) -> str:
    """A URL without its password, for logs and MLflow params."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def scrub(text: str) -> str:
    """Text with the password of any URL in it replaced by *** (for logs, tags and error attrs)."""
    # Up to the last @ before the host, since a password may itself hold an @.
    return re.sub(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)\S*@(?=[^@\s/]*(?:[/\s]|$))", r"\1***@", text)
