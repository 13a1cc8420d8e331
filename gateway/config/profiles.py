"""Meter profiles: which quantities a meter is read for and how, kept in files beside the config.

`profile = "dlt645-2007"` names `profiles/dlt645-2007.toml`, looked up first in the
`profiles/` directory next to the config file (a site's own profiles), then in the project's
`protocols/meter_profiles/` (the profiles shipped with the gateway, package data). Anything containing a path
separator or ending in `.toml` is a path instead, relative to the config file's directory.
The search rules match `protocols.profiles.find_profile`. This module only finds the file;
its contents are checked by `protocols.profiles.load_profile`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.config.context import Context
from gateway.config.issues import KeyPath
from gateway.config.kinds import INVALID, Kind, SchemaDefs, Siblings
from protocols.profiles import builtin_profile_dir

PROFILE_SUFFIX: Final = ".toml"
# The same names protocols.profiles accepts (profiles are known by their file stem).
PROFILE_NAME_PATTERN: Final = "[a-z0-9][a-z0-9._-]*"


@dataclass(frozen=True, slots=True)
class ProfileRef:
    """The profile a meter uses: `name` as written (the file stem for a path) and its file."""

    name: str
    path: Path


def profile_search_path(config_dir: Path) -> tuple[Path, ...]:
    """Where profile names are looked up, most specific first."""
    dirs = [config_dir / "profiles", builtin_profile_dir()]
    unique: list[Path] = []
    for directory in dirs:
        if all(directory.resolve() != seen.resolve() for seen in unique):
            unique.append(directory)
    return tuple(unique)


def _is_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith(PROFILE_SUFFIX)


@dataclass(frozen=True)
class ProfileKind(Kind):
    """A profile name (looked up in the profile directories) or a path to a profile file."""

    def expected(self) -> str:
        return (
            "a profile name (lower-case letters, digits, '.', '_', '-'; the file <name>.toml in "
            "profiles/ beside the config or in the shipped protocols/meter_profiles/) or a path to a profile file"
        )

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if not isinstance(value, str) or not value:
            return self.reject(value, at, ctx)
        if _is_path(value):
            path = ctx.resolve(value)
            if not path.is_file():
                ctx.report(at, f"profile file {path} does not exist")
                return INVALID
            return ProfileRef(name=path.stem, path=path)
        if not re.fullmatch(PROFILE_NAME_PATTERN, value):
            return self.reject(value, at, ctx)
        search = profile_search_path(ctx.base_dir)
        for directory in search:
            candidate = directory / f"{value}{PROFILE_SUFFIX}"
            if candidate.is_file():
                return ProfileRef(name=value, path=candidate)
        available = sorted(
            {p.stem for d in search if d.is_dir() for p in d.glob(f"*{PROFILE_SUFFIX}")}
        )
        looked = ", ".join(str(d / f"{value}{PROFILE_SUFFIX}") for d in search)
        message = f'no profile named "{value}" (looked for {looked})'
        close = difflib.get_close_matches(value, available, n=1)
        if close:
            message += f'; did you mean "{close[0]}"?'
        elif available:
            message += f"; available: {', '.join(available)}"
        ctx.report(at, message)
        return INVALID

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}
