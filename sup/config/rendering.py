"""Rendering the settings from their declarations: `sup.toml.example` (`sup init`) and docs/configuration.md."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec
from msgspec import Meta

from sup.config.settings import ENV_ALIASES, Config, env_name, field_types, sections


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def example_toml() -> str:
    """The commented sup.toml with every setting at its default (what `sup init` writes)."""
    lines = [
        "# SUP configuration. Every setting is shown with its default value, commented out.",
        "# Any setting can also be given as an environment variable SUP_<SECTION>_<KEY>,",
        "# e.g. SUP_DATABASE_URL; SUP_HOST, SUP_PORT and SUP_DATA_DIR are short forms.",
        "",
    ]
    defaults = Config()
    for section, struct in sections().items():
        lines.append(f"[{section}]")
        for name in struct.__struct_fields__:
            doc = _description(struct, name)
            for chunk in _wrap(doc):
                lines.append(f"# {chunk}")
            value = getattr(getattr(defaults, section), name)
            lines.append(f"# {name} = {toml_value(value)}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def settings_reference() -> str:
    """The settings tables of docs/configuration.md, one per section (`python -m sup.docgen` writes them)."""
    aliases: dict[tuple[str, str], list[str]] = {}
    for alias, target in ENV_ALIASES.items():
        aliases.setdefault(target, []).append(alias)
    defaults = Config()
    parts = []
    for section, struct in sections().items():
        parts.append(f"### `[{section}]`\n")
        if struct.__doc__:
            parts.append(f"{struct.__doc__.strip()}\n")
        rows = [
            "| Setting | Type | Default | Environment variable | Description |",
            "|---|---|---|---|---|",
        ]
        for name, hint in field_types(struct).items():
            names = " or ".join(f"`{n}`" for n in [env_name(section, name), *aliases.get((section, name), [])])
            default = toml_value(getattr(getattr(defaults, section), name))
            description = _description(struct, name).replace("<", "&lt;").replace(">", "&gt;")
            cells = [f"`{name}`", _type_text(hint), f"`{default}`", names, description]
            rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


def _type_text(hint: Any) -> str:
    base, metas = (get_args(hint)[0], hint.__metadata__) if get_origin(hint) is Annotated else (hint, ())
    if get_origin(base) is Literal:
        return " | ".join(f'`"{value}"`' for value in get_args(base))
    if get_origin(base) is list:
        return f"list of {get_args(base)[0].__name__}"
    if get_origin(base) is dict:
        return "tables"
    bounds = []
    for meta in metas:
        if isinstance(meta, Meta):
            for attribute, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
                value = getattr(meta, attribute)
                if value is not None:
                    bounds.append(f"{sign} {value}")
    return f"{base.__name__} ({', '.join(bounds)})" if bounds else base.__name__


def _description(struct: type[msgspec.Struct], name: str) -> str:
    hint = field_types(struct)[name]
    for meta in getattr(hint, "__metadata__", ()):
        if isinstance(meta, Meta) and meta.description:
            return meta.description
    return ""


def _wrap(text: str, width: int = 88) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines
