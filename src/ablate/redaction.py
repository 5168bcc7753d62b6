"""Credentials out of what ablate prints and stores: URLs shown without their password, text scrubbed of them.

A database or HTTP URL can carry a credential in two places, and both are masked, in every form:

- the userinfo before the host: `user:password@`, `:password@` (a password and no user), a
  password that itself holds `@`, `:` or `%`-escapes; in a database URL a user without a password
  (`postgresql://ablate@host`) is shown as it is, with no invented `:***`, while in an HTTP URL a
  lone userinfo is masked whole (`https://***@host`): there it is usually a token;
- the query string: any parameter whose name says it is a secret (`password`, `passwd`, `pwd`,
  `pass`, `sslpassword`, `secret`, `token`, `access_token`, `api_key`, `apikey`, `auth`,
  `credentials`, `client_secret`, ... in any letter case, `%`-escaped or not).

`redact` takes one URL (a setting); `scrub` any text (an error message, a traceback), and masks
every URL found in it. Both are what the terminal, the logs, MLflow tags and params, Optuna
attributes and the report get, never the raw URL. `strip_credentials` goes further, for a URL
that is to be followed (the report's links into the MLflow UI): no userinfo at all (a user without
a password neither), no secret query parameter, not even masked.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
# Query parameters that carry a secret, by the words in their (lower-cased, unescaped) name.
SECRET_WORDS = ("pass", "pwd", "secret", "token", "auth", "key", "credential", "signature", "sig")

# scheme://  userinfo@  (userinfo: anything up to the last @ before the host; no spaces or slashes)
# (a password may hold `@`, `:` and even `/`: the userinfo runs to the last `@` of the URL that a host follows)
_USERINFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s/?#:@]*:[^\s]*|[^\s/?#:@]*)@(?=[^\s@/?#]*(?:[/?#\s'\",)]|$))"
)
# name=value pairs in a query string (or a libpq-style `password=...` in free text after ? & or ;)
_QUERY = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#\s]+)=(?P<value>[^&;#\s'\"]*)")


def _is_secret_name(name: str) -> bool:
    plain = unquote(name).lower()
    return any(word in plain for word in SECRET_WORDS)


def _mask_userinfo(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    if ":" not in userinfo:
        if match.group("scheme").lower().startswith("http") and userinfo:
            return f"{match.group('scheme')}{MASK}@"  # `https://TOKEN@host`: a token in the user's place
        return match.group(0)  # a database user and no password: nothing to hide
    user = userinfo.split(":", 1)[0]
    return f"{match.group('scheme')}{user}:{MASK}@"


def _mask_query(match: re.Match[str]) -> str:
    if not _is_secret_name(match.group("name")) or not match.group("value"):
        return match.group(0)
    return f"{match.group('lead')}{match.group('name')}={MASK}"


def scrub(text: str) -> str:
    """Text with every credential of every URL in it masked (see the module docstring for the forms)."""
    text = _USERINFO.sub(_mask_userinfo, text)
    return _QUERY.sub(_mask_query, text) if "=" in text else text


def redact(url: str) -> str:
    """A URL without its credentials, for the terminal, logs, MLflow tags and the report."""
    return scrub(url)


def strip_credentials(url: str) -> str:
    """The URL with every credential removed rather than masked, for a link a browser follows.

    `http://bob:s3cr3t@host:5000/?token=t&x=1` -> `http://host:5000/?x=1`: the userinfo goes whole
    (`user:password@`, `user@`, `%`-escaped or not, or already masked by `redact`), and so does
    every query parameter whose name says it is a secret; the rest of the URL is left as it is.
    """
    url = _USERINFO.sub(lambda match: match.group("scheme"), url, count=1)
    head, mark, query = url.partition("?")
    if not mark:
        return url
    query, hash_mark, fragment = query.partition("#")
    kept = [pair for pair in re.split(r"[&;]", query) if pair and not _is_secret_name(pair.partition("=")[0])]
    return head + (f"?{'&'.join(kept)}" if kept else "") + hash_mark + fragment
