"""State shared while one config file is validated: where it lives and what went wrong so far."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.config.issues import ConfigIssue, KeyPath


class Context:
    """One validation run over one file.

    `base_dir` anchors relative paths (the config file's directory, so a config and its keys
    can move together). `known_ids` maps a collection (`"buses"`, `"meters"`, ...) to the ids
    found in the raw document, each with its raw table: references are checked against what the
    user wrote, not against what validated, so one bad bus does not also report every meter on
    it as "unknown bus".
    """

    def __init__(self, file: Path, base_dir: Path, raw: Mapping[str, Any]) -> None:
        self.file = file
        self.base_dir = base_dir
        self.raw = raw
        self.issues: list[ConfigIssue] = []
        # None: the collection is present but not an array of tables, so its ids are unknown
        # and references into it are not checked (its own error says what is wrong).
        self.known_ids: dict[str, dict[str, Mapping[str, Any]] | None] = {}
        self._paths: dict[int, KeyPath] = {}
        self._keep_alive: list[object] = []

    def report(self, at: KeyPath, message: str) -> None:
        self.issues.append(ConfigIssue(file=self.file, path=str(at), message=message))

    def remember(self, obj: object, at: KeyPath) -> None:
        """Record where a built table came from, for checks that run after building."""
        self._paths[id(obj)] = at
        # Holding a reference keeps id(obj) from being reused by another object mid-run.
        self._keep_alive.append(obj)

    def path_of(self, obj: object) -> KeyPath:
        return self._paths[id(obj)]

    def resolve(self, value: str) -> Path:
        """A path from the file, made absolute against the config file's directory."""
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        # Lexical clean-up only ("a/../b" -> "b"): symlinks such as /etc/gw/current are kept,
        # so messages show the path the user configured.
        return Path(os.path.normpath(path))
