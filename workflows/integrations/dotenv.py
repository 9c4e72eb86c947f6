"""The `.env` format, written by a serializer: a value is data, never text spliced into a file.

One quoting rule that every reader of the generated `.env` understands the same way — the
`dotenv` package (Node apps, Better Auth), Node's own `--env-file`, Vite's `loadEnv` (dotenv
plus dotenv-expand) and python-dotenv:

    NAME='value'

- NAME matches `[A-Za-z_][A-Za-z0-9_]*` in full.
- The value is single-quoted: inside single quotes `#`, spaces, `"` and backticks are literal
  for all of them, and no escape sequences are processed (dotenv, Node).
- Refused in a value, because the readers disagree on them or they end the line: control
  characters (newline, CR, tab, NUL...), non-ASCII, `'` (ends the quote), `\\` (python-dotenv
  unescapes `\\\\` and `\\'` inside single quotes, the others keep it) and `$` (Vite expands
  `$NAME` even inside single quotes; the others do not). A URL percent-encodes them (`%24`).
"""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Printable ASCII except $ (0x24), ' (0x27) and \ (0x5c).
VALUE = re.compile(r"[\x20-\x23\x25\x26\x28-\x5b\x5d-\x7e]*")
_DEFINITION = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=")


class UnsafeEnvValue(ValueError):
    """A name or value the `.env` serializer refuses to write."""


def dotenv_line(name: str, value: str) -> str:
    """`NAME='value'`, or UnsafeEnvValue when either cannot be written without ambiguity."""
    if not NAME.fullmatch(name):
        raise UnsafeEnvValue(f"{name!r} is not a valid environment variable name.")
    if not VALUE.fullmatch(value):
        raise UnsafeEnvValue(
            f"The value of {name} must be printable ASCII without `$`, `'` or `\\` "
            "(no newlines or control characters).")
    return f"{name}='{value}'"


def dotenv_names(text: str) -> set[str]:
    """The names a `.env` text defines (`NAME=...` or `export NAME=...`; comments skipped)."""
    return {match.group(1) for line in text.splitlines()
            if (match := _DEFINITION.match(line)) and not line.lstrip().startswith("#")}
