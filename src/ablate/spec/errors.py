"""The errors of a study file that cannot be used, and how pydantic's errors become one line per field path."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ablate.errors import AblateError

MAX_ECHO = 300  # characters of one error line (a value echoed back is cut there)
MAX_PROBLEMS = 20  # problems listed per error (the count says how many more)


class SpecError(AblateError, ValueError):
    """A study file (with its profile and overrides) that cannot be used; says where and why."""

    exit_status = 2  # bad input, refused before anything was created


def format_validation_error(error: ValidationError, where: str) -> str:
    """One line per problem: the field path, what was wrong, and what was given."""
    lines = [f"{where}: {error.error_count()} problem(s)"]
    shown = error.errors(include_url=False)[:MAX_PROBLEMS]
    for item in shown:
        loc = _format_loc(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; `ablate validate --help` lists the sections)"
        elif item["type"] == "literal_error" or ("input" in item and not isinstance(item["input"], dict) and item["type"] != "missing"):
            message = f"{message}; received {item['input']!r}"
        lines.append(shorten(f"  {loc}: {message}" if loc else f"  {message}"))
    if error.error_count() > len(shown):
        lines.append(f"  ... and {error.error_count() - len(shown)} more")
    return "\n".join(lines)


def shorten(text: str, limit: int = MAX_ECHO) -> str:
    """`text` cut to `limit` characters: an error echoes what it was given, never megabytes of it."""
    return text if len(text) <= limit else f"{text[: limit - 30]}... ({len(text):,} characters in all)"


# The tags of a discriminated union (`repeats`: a number of seeds, or rounds): pydantic puts the
# chosen branch in the error's path, which is no key of the study file.
UNION_TAGS = {("repeats", "seeds"), ("repeats", "rounds")}


def _format_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for index, part in enumerate(loc):
        if index and (loc[index - 1], part) in UNION_TAGS:
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _first_message(error: ValidationError) -> str:
    item = error.errors(include_url=False)[0]
    loc = _format_loc(item["loc"])
    message = item["msg"].removeprefix("Value error, ")
    return shorten(f"{loc}: {message}" if loc else message)


class SamplerUnavailableError(SpecError):
    """The chosen sampler needs a package that is not installed; refused before anything is created."""
