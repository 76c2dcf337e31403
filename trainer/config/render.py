"""Writing a config as a commented TOML file (the user's starting point)."""

from __future__ import annotations

import tomlkit

from trainer.config.schema import SECTIONS, TrainConfig, field_specs, toml_value

_UNSET_SAMPLES = {"path": '"path/to/it"', "int": "4", "float": "4.0"}


def help_comment(description: str, unit: str) -> str:
    return description.rstrip(".") + "." + (f" [{unit}]" if unit else "")


def render_toml(cfg: TrainConfig, *, header: str = "") -> str:
    """The config as TOML: every key with its help as a comment; unset keys as commented lines."""
    doc = tomlkit.document()
    if header:
        for line in header.splitlines():
            doc.add(tomlkit.comment(line))
        doc.add(tomlkit.nl())
    specs = field_specs()
    for section, model in SECTIONS.items():
        table = tomlkit.table()
        table.add(tomlkit.comment((model.__doc__ or section).strip().split(" — ", 1)[-1]))
        values = getattr(cfg, section)
        for spec in (s for s in specs if s.section == section):
            table.add(tomlkit.comment(help_comment(spec.description, spec.unit)))
            value = getattr(values, spec.name)
            if value is None:
                table.add(tomlkit.comment(f"{spec.name} = {_UNSET_SAMPLES.get(spec.kind, '...')}"))
                continue
            item = tomlkit.item(toml_value(value))
            if spec.kind == "table" and isinstance(item, tomlkit.items.Table):
                inline = tomlkit.inline_table()
                inline.update(item.unwrap())
                item = inline
            if spec.kind == "prompts" and isinstance(value, list) and value:
                array = tomlkit.array()
                array.multiline(True)
                array.extend(value)
                item = array
            table.add(spec.name, item)
        doc.add(section, table)
    return tomlkit.dumps(doc)
