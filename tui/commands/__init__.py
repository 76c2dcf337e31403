"""Sub-commands of the `kazari` CLI, one module each."""
