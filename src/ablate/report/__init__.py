"""`ablate report NAME`: the answer to the study's question, as an HTML dashboard, Markdown or JSON.

Importing this package is instant (the CLI builds its parser from it); the heavy work lives in
its modules: `collect` (Optuna + MLflow), `answer` (statistics from `ablate.analysis`),
`importance` (fANOVA and PED-ANOVA with bootstrap), `pareto` (the front of a multi-objective
study), `figures` (plotly + PNG) and `render` (Markdown, HTML).
"""

from __future__ import annotations

from ablate.report.command import add_parser, make_report

__all__ = ["add_parser", "make_report"]
