"""The PromQL of the chart's Grafana dashboard, with Grafana's variables filled in."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy_tools import DASHBOARD

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str

    @property
    def name(self) -> str:
        return f"{self.panel} [{self.ref}]"


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(panel["title"], target["refId"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel.get("targets", [])
    ]


def substitute(expr: str, *, namespace: str, window: str) -> str:
    """Fills in what Grafana would: the namespace variable and the range variables."""
    values = {"namespace": namespace, "__rate_interval": window, "__range": window}

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"dashboard variable ${name} has no test value")
        return values[name]

    return _VARIABLE.sub(replace, expr)
