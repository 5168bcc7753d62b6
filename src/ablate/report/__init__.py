"""`ablate report NAME`: the answer to the study's question, as an HTML dashboard, Markdown or JSON.

The command's arguments are in `ablate.cli.report`; the work lives in this package's modules: `collect` (Optuna + MLflow), `answer` (statistics from `ablate.analysis.effects`),
`importance` (fANOVA and PED-ANOVA with bootstrap), `pareto` (the front of a multi-objective
study), `figures` (plotly + PNG) and `render` (Markdown, HTML).
"""

from __future__ import annotations

from ablate.report.make import make_report

__all__ = ["make_report"]
