"""Configuration problems: where each one is and what the user should write instead.

A field engineer fixing a gateway config over a slow SSH link wants every mistake in one
pass, each pointing at a place they can find in the file. So nothing here stops at the first
problem: the validator collects `ConfigIssue`s and raises one `ConfigError` at the end.

Key paths read like the TOML they point into, with the entry's id added because array
indices alone are hard to count in a 300-meter file: `meters[3] (id "m-004").poll_interval_s`.
Indices are 0-based, the way every TOML and JSON tool counts them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import GatewayError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(name: str) -> str:
    """A key as it would be written in TOML: bare when possible, quoted otherwise."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class KeyPath:
    """A location inside the TOML document, rendered like `meters[3] (id "m-004").bus`.

    The empty path is the document itself (used for whole-file problems).
    """

    text: str = ""
    leaf: str = ""  # the last key named, e.g. "meters" for `meters` and for `meters[3]`

    def key(self, name: str) -> KeyPath:
        """The path of `name` inside the table at this path."""
        part = _toml_key(name)
        return KeyPath(f"{self.text}.{part}" if self.text else part, name)

    def index(self, position: int, label: str | None = None) -> KeyPath:
        """The path of item `position` of the array at this path, optionally naming the item."""
        suffix = f" ({label})" if label else ""
        return KeyPath(f"{self.text}[{position}]{suffix}", self.leaf)

    def __str__(self) -> str:
        return self.text


ROOT = KeyPath()


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in one config file.

    `file` is the path as the user gave it (so it matches what they typed), `path` the key
    path inside the document ("" for whole-file problems), `message` what was expected.
    `line` and `column` (1-based) are known only for TOML syntax errors: a file that does not
    parse has no key paths yet.
    """

    file: Path
    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = str(self.file)
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            where += f": {self.path}"
        return f"{where}: {self.message}"


class ConfigError(GatewayError):
    """A config file that cannot be used; `errors` holds every problem found, in file order
    of the sections (structure first, then cross-references between sections)."""

    def __init__(self, errors: list[ConfigIssue]) -> None:
        if not errors:
            raise ValueError("ConfigError needs at least one issue")
        self.errors = list(errors)
        super().__init__("\n".join(str(issue) for issue in self.errors))


def format_errors(err: ConfigError) -> str:
    """The text `edge-gateway check-config` and `run` print for a bad config.

    One line per problem (`FILE: key.path: message`, or `FILE:LINE:COL: message` for syntax
    errors), then a count so a truncated terminal still shows how many there were.
    """
    lines = [str(issue) for issue in err.errors]
    count = len(err.errors)
    files = sorted({str(issue.file) for issue in err.errors})
    noun = "error" if count == 1 else "errors"
    lines.append(f"{count} {noun} in {', '.join(files)}")
    return "\n".join(lines)
