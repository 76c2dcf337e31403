"""The training config: schema, presets, validation, derived figures and sd-scripts interop.

    from trainer.config import TrainConfig, load_config, ConfigError, preset, ConfigDocument, derived_figures

``load_config(path)`` reads, validates and path-resolves a file (raises ``ConfigError``);
``check_config(cfg)`` lists the consistency errors and warnings; ``ConfigDocument`` edits a file
keeping its comments; ``field_specs()`` describes every key for forms and docs.
"""

from trainer.config.checks import check_config
from trainer.config.derived import DerivedFigures, derived_figures
from trainer.config.document import ConfigDocument
from trainer.config.errors import ConfigError, ConfigIssue
from trainer.config.loading import load_config
from trainer.config.presets import PRESETS, preset
from trainer.config.render import render_toml
from trainer.config.schema import FieldSpec, TrainConfig, field_spec, field_specs

__all__ = [
    "PRESETS",
    "ConfigDocument",
    "ConfigError",
    "ConfigIssue",
    "DerivedFigures",
    "FieldSpec",
    "TrainConfig",
    "check_config",
    "derived_figures",
    "field_spec",
    "field_specs",
    "load_config",
    "preset",
    "render_toml",
]
