"""Reading a config file: bytes -> TOML -> typed `GatewayConfig`, or every problem at once."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

from gateway.config.context import Context
from gateway.config.crosschecks import CROSS_CHECKS
from gateway.config.fields import specs_of
from gateway.config.issues import ROOT, ConfigError, ConfigIssue
from gateway.config.kinds import TableList, check_fields
from gateway.config.model import GatewayConfig

# tomllib (3.11) reports positions only inside the message: "... (at line 3, column 7)".
_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = re.compile(r"\s*\(at end of document\)$")


def config_sha256(path: Path) -> str:
    """Hex SHA-256 of the config file's bytes, as published in the birth message.

    `load_config` sets `GatewayConfig.sha256` from the very bytes it parsed; use that for a
    running daemon, since the file may change after it was read.
    """
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _syntax_issue(file: Path, text: str, exc: tomllib.TOMLDecodeError) -> ConfigIssue:
    message = str(exc)
    line: int | None = None
    column: int | None = None
    match = _POSITION.search(message)
    if match:
        line, column = int(match.group(1)), int(match.group(2))
        message = message[: match.start()]
    elif _AT_END.search(message):
        line = text.count("\n") + 1
        message = _AT_END.sub("", message) + " (at end of file)"
    return ConfigIssue(
        file=file, path="", message=f"TOML syntax error: {message}", line=line, column=column
    )


def _parse(file: Path) -> tuple[dict[str, Any], bytes]:
    try:
        data = file.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigIssue(file, "", f"cannot read the config file: {reason}")]
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [ConfigIssue(file, "", "not UTF-8 text; TOML files must be UTF-8", line=line)]
        ) from exc
    try:
        return tomllib.loads(text), data
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_issue(file, text, exc)]) from exc


def _collect_ids(raw: dict[str, Any], ctx: Context) -> None:
    """Ids as written, per collection, for reference checks (see `Context.known_ids`)."""
    for name, spec in specs_of(GatewayConfig).items():
        kind = spec.kind
        if not isinstance(kind, TableList) or kind.key is None:
            continue
        entries = raw.get(name, [])
        if not isinstance(entries, list):
            ctx.known_ids[name] = None
            continue
        found: dict[str, Any] = {}
        for entry in entries:
            if isinstance(entry, dict):
                ident = entry.get(kind.key)
                if isinstance(ident, str) and ident and ident not in found:
                    found[ident] = entry
        ctx.known_ids[name] = found


def load_config(path: Path) -> GatewayConfig:
    """Read, validate and type a gateway config file.

    Raises `ConfigError` listing every problem found: syntax errors (with line and column),
    unknown or missing keys, wrong types and ranges, duplicate ids, dangling references and
    cross-section rules. Relative paths inside the file resolve against its directory.
    """
    file = Path(path)
    raw, data = _parse(file)
    ctx = Context(file=file, base_dir=file.resolve().parent, raw=raw)
    _collect_ids(raw, ctx)
    sections, _ = check_fields(specs_of(GatewayConfig), raw, ROOT, ctx)
    for rule in CROSS_CHECKS:
        rule(sections, ctx)
    if ctx.issues:
        raise ConfigError(ctx.issues)
    return GatewayConfig(**sections, source_file=file, sha256=hashlib.sha256(data).hexdigest())
