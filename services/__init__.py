"""The four spar services; each package is one service (its own process and image entrypoint)."""
