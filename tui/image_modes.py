"""Names of the image renderers, free of Textual: the CLI parser needs them for `--images`."""

RENDERERS = ("halfcell", "auto", "sixel", "tgp", "unicode")
