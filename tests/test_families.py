"""The family registry: every `model.family` the schema admits has exactly one registered family."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from ablate.families import FAMILIES, UnknownFamilyError, family_for
from ablate.spec.run_config import ModelConfig
from ablate.spec.study_spec import FAMILY_METRICS
from ablate.training.family import Family


def test_every_schema_family_is_registered_with_the_schemas_metrics() -> None:
    names = typing.get_args(ModelConfig.model_fields["family"].annotation)
    assert set(FAMILIES) == set(names) == {*FAMILY_METRICS, "custom"}  # a custom model logs the study's own metrics
    for name in names:
        family: Family = family_for(name)
        assert family.name == name
        assert family.metrics == FAMILY_METRICS.get(name, ())  # an objective the schema allows is one the family logs
        assert family.pictures and all(picture.endswith(".png") for picture in family.pictures)


def test_an_unknown_family_names_the_known_ones() -> None:
    with pytest.raises(UnknownFamilyError, match="diffusion, ensemble, unet"):
        family_for("resnet")


def test_families_log_without_mlflow() -> None:
    """A family logs through the TrialLog it is given: importing every family loads no MLflow."""
    code = "import sys, ablate.families; print('keras' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["True", "False"]
