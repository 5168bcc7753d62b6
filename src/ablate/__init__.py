"""ablate: hyperparameter and ablation studies of Keras functional models, with Optuna and MLflow.

Importing the package is cheap: TensorFlow, Optuna and MLflow load only when a command needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
