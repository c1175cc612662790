"""Subcommands of the ``spar`` CLI, one module per area; each has ``register(sub)``."""
