"""The key reference in docs/configuration.md, generated from the model's declarations.

`python -m gateway.config.reference --write docs/configuration.md` rewrites the part of the
document between the markers; tests/test_config.py fails when the document and the
declarations disagree, so the reference cannot go stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from gateway.config.fields import REQUIRED, Spec, specs_of, table_doc
from gateway.config.kinds import MapOf, Table, TableList, Variants, to_json
from gateway.config.model import GatewayConfig

BEGIN_MARKER: Final = "<!-- BEGIN GENERATED KEY REFERENCE (python -m gateway.config.reference) -->"
END_MARKER: Final = "<!-- END GENERATED KEY REFERENCE -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default_text(spec: Spec, per_variant: Mapping[str, Any] | None = None) -> str:
    if per_variant:
        return ", ".join(
            f"`{json.dumps(to_json(value), ensure_ascii=False)}` ({name})"
            for name, value in per_variant.items()
        )
    if spec.default is REQUIRED:
        return "**required**"
    if spec.default is None:
        return "unset"
    if isinstance(spec.default, dict) or hasattr(spec.default, "__dataclass_fields__"):
        return "`{}`"
    return f"`{json.dumps(to_json(spec.default), ensure_ascii=False)}`"


def _rows(cls: type, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Iterator[str]:
    yield "| key | accepts | default | meaning |"
    yield "|---|---|---|---|"
    for name, spec in specs_of(cls).items():
        per_variant = (overrides or {}).get(name)
        yield (
            f"| `{name}` | {_cell(spec.kind.expected())} | {_default_text(spec, per_variant)} "
            f"| {_cell(spec.doc)} |"
        )


def _section(
    header: str, cls: type, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Iterator[str]:
    yield f"### `{header}`"
    yield ""
    yield table_doc(cls)
    yield ""
    yield from _rows(cls, overrides)
    yield ""
    table = header.strip("[]").split(" ")[0]
    for name, spec in specs_of(cls).items():
        kind = spec.kind
        if isinstance(kind, Table):
            yield from _section(f"[{table}.{name}]", kind.cls)
        elif isinstance(kind, MapOf) and isinstance(kind.item, Table):
            yield from _section(f"[{table}.{name}.<{kind.name}>]", kind.item.cls)
        elif isinstance(kind, TableList) and isinstance(kind.item, Table):
            yield from _section(f"{header}.{name} entries", kind.item.cls)
        elif isinstance(kind, TableList) and isinstance(kind.item, Variants):
            yield from _variant_sections(f"[[{table}.{name}]]", kind.item)


def _variant_sections(header: str, kind: Variants) -> Iterator[str]:
    by_class: dict[type, list[str]] = {}
    for name, variant in kind.options.items():
        by_class.setdefault(variant.cls, []).append(name)
    for cls, names in by_class.items():
        overrides: dict[str, dict[str, Any]] = {}
        for name in names:
            for key, value in kind.options[name].defaults.items():
                overrides.setdefault(key, {})[name] = value
        shown = " / ".join(names)
        yield from _section(f"{header} ({kind.discriminator} = {shown})", cls, overrides)


def reference_markdown() -> str:
    """The key reference as Markdown: one table per TOML table, in file order."""
    lines = ["## Key reference", ""]
    lines.append(
        "Generated from the declarations in `gateway/config/` (model.py and the section "
        "modules); do not edit by hand."
    )
    lines.append("")
    lines.extend(_rows(GatewayConfig))
    lines.append("")
    for name, spec in specs_of(GatewayConfig).items():
        kind = spec.kind
        if isinstance(kind, Table):
            lines.extend(_section(f"[{name}]", kind.cls))
        elif isinstance(kind, TableList) and isinstance(kind.item, Variants):
            lines.extend(_variant_sections(f"[[{name}]]", kind.item))
        elif isinstance(kind, TableList) and isinstance(kind.item, Table):
            lines.extend(_section(f"[[{name}]]", kind.item.cls))
        else:
            lines.append(f"### `[{name}]`")
            lines.append("")
            lines.append(spec.doc + " Any keys are accepted here.")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def replace_reference(document: str) -> str:
    """`document` with the text between the markers replaced by a fresh reference."""
    start = document.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    end = document.index(END_MARKER)
    return document[:start] + "\n" + reference_markdown() + document[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--write", type=Path, help="rewrite the reference inside this Markdown file"
    )
    args = parser.parse_args(argv)
    if args.write is None:
        sys.stdout.write(reference_markdown())
        return 0
    path: Path = args.write
    path.write_text(replace_reference(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
