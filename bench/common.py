"""What the bench scripts share: the ``RESULT`` line each one prints last."""

from __future__ import annotations


def format_result(name: str, **fields: object) -> str:
    """``RESULT <name> key=value ...``, the fields in the order given: the one line a bench
    script ends with (its headline numbers, quoted in bench/RESULTS.md)."""
    return f"RESULT {name} " + " ".join(f"{key}={value}" for key, value in fields.items())
