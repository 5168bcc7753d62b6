"""Structural ablation (`model.remove`, `ablate graph`): removing layers of a built functional graph.

Part of issue 12. The removals are made on real Keras models (the built-in U-Net, and small
functional models written here as a user would: a ResNet-style classifier, a graph a removal breaks);
one tiny study trains its ablated variants end to end and MLflow records them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
import pytest
import yaml
from conftest import tiny_study
from keras import layers
from mlflow.tracking import MlflowClient
from rich.console import Console

from ablate.cli.main import main
from ablate.models import build_unet
from ablate.models.surgery import RemovalError, components, remove_layers, skip_connections
from ablate.runtime.progress import StudyProgress
from ablate.runtime.run import run_study
from ablate.runtime.studies import _differences
from ablate.spec.loading import spec_from_dict
from ablate.spec.run_config import ModelConfig

SHAPE = (28, 28, 1)


def kinds(model: keras.Model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


@pytest.mark.parametrize(
    "settings",
    [
        {"skip": "concat"},
        {"skip": "add"},
        {"skip": "concat", "block": "inception"},
        {"skip": "concat", "filters": 6, "batch_norm": True, "upsampling": "transpose", "dropout": 0.1},
    ],
    ids=["concat", "add", "inception", "bn-transpose-dropout"],
)
def test_removing_the_unets_skips_gives_exactly_the_no_skip_unet(settings: dict[str, Any]) -> None:
    settings = {"filters": 4, **settings}
    with_skips = build_unet(ModelConfig(**settings), SHAPE)
    without = build_unet(ModelConfig(**{**settings, "skip": "none"}), SHAPE)
    depth = 2
    assert skip_connections(with_skips) == [f"dec{stage}_skip" for stage in range(depth, 0, -1)]
    ablated = remove_layers(with_skips, skip_connections(with_skips))
    assert kinds(ablated) == kinds(without)
    assert ablated.count_params() == without.count_params()
    assert kinds(ablated) != kinds(with_skips)  # (an Add skip has no weights: the layers tell them apart)
    assert ablated.output_shape == with_skips.output_shape
    assert [layer.name for layer in with_skips.layers if layer.name.endswith("_skip")]  # the original is untouched


def test_an_inception_blocks_branches_are_a_merge_but_not_a_skip() -> None:
    model = build_unet(ModelConfig(filters=8, skip="none", block="inception"), SHAPE)
    concat = {c.name: c for c in components(model)}["enc1_inc_concat"]
    assert concat.merge and not concat.skip and len(concat.inputs) == 4
    assert skip_connections(model) == []
    narrower = remove_layers(model, ["enc1_inc_concat"])  # still removable by name: one branch passes on
    assert narrower.count_params() < model.count_params()


def resnet_classifier(classes: int = 10) -> keras.Model:
    """A user's small functional ResNet: an identity shortcut and a 1x1-projection shortcut."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    y = layers.Conv2D(8, 3, padding="same", activation="relu", name="a_conv1")(x)
    y = layers.Conv2D(8, 3, padding="same", name="a_conv2")(y)
    x = layers.Activation("relu", name="a_out")(layers.Add(name="a_add")([y, x]))  # identity shortcut
    y = layers.Conv2D(16, 3, padding="same", activation="relu", name="b_conv1")(x)
    y = layers.Conv2D(16, 3, padding="same", name="b_conv2")(y)
    shortcut = layers.Conv2D(16, 1, name="b_proj")(x)
    x = layers.Activation("relu", name="b_out")(layers.Add(name="b_add")([shortcut, y]))  # projection shortcut
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax", name="classes")(x), name="resnet")


def test_a_residual_models_add_layers_are_shortcuts_and_removing_them_trains() -> None:
    model = resnet_classifier()
    adds = {c.name: c for c in components(model) if c.merge}
    assert adds["a_add"].skip and adds["a_add"].kept == "a_conv2"
    assert adds["b_add"].skip and adds["b_add"].kept == "b_conv2"  # the main path, whatever the call order
    plain = remove_layers(model, skip_connections(model))
    assert "Add" not in kinds(plain) and "b_proj" not in [layer.name for layer in plain.layers]
    assert plain.count_params() == model.count_params() - (8 * 16 + 16)  # the projection's kernel and bias
    plain.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    history = plain.fit(rng.random((32, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 32), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_a_shape_preserving_layer_removed_is_the_identity() -> None:
    model = resnet_classifier()
    preserving = {c.name for c in components(model) if not c.merge}
    assert {"a_out", "a_conv2", "b_out"} <= preserving and "stem" not in preserving and "pool" not in preserving
    ablated = remove_layers(model, ["a_out"])
    assert "a_out" not in [layer.name for layer in ablated.layers]
    assert ablated.count_params() == model.count_params()


def test_a_removal_that_breaks_shapes_names_the_layer_and_why() -> None:
    inputs = keras.Input((16,))
    a, b = layers.Dense(4, name="a")(inputs), layers.Dense(4, name="b")(inputs)
    wide = layers.Concatenate(name="join")([a, layers.Dense(4, name="b2")(b)])
    out = layers.Add(name="sum")([wide, layers.Dense(8, name="c")(inputs)])  # needs the join's 8 channels
    model = keras.Model(inputs, out)
    with pytest.raises(RemovalError, match=r"removing join breaks layer 'sum' \(Add\)"):
        remove_layers(model, ["join"])
    with pytest.raises(RemovalError, match=r"'nope' is not a removable layer.*removable: b2, join, sum"):
        remove_layers(model, ["nope"])


def test_a_model_with_a_shared_layer_is_refused() -> None:
    inputs = keras.Input((4,))
    shared = layers.Dense(4, name="shared")
    model = keras.Model(inputs, layers.Add(name="sum")([shared(inputs), shared(shared(inputs))]))
    with pytest.raises(RemovalError, match="'shared' is called 3 times"):
        components(model)


def removal_study(levels: list[str], **model: Any) -> dict[str, Any]:
    return tiny_study(
        name="removal", model={"filters": 4, "depth": 2, "skip": "concat", **model}, factors={"model.remove": levels},
        repeats=1, train={"epochs": 1, "batch_size": 64},
    )


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        (["none", "enc1_conv"], "'enc1_conv' is not a removable layer of model 'unet_concat'"),
        (["none", "dec1_skip+no_such_layer"], "'no_such_layer' is not a removable layer"),
        (["none", "dec1 skip"], "model.remove"),  # not a layer name at all: refused by the schema
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_bad_removal_is_refused_before_anything_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], levels: list[str], message: str, command: str
) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(removal_study(levels)))
    home = tmp_path / "home"
    code = main([command, str(path), *(["--home", str(home)] if command == "run" else [])])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not home.exists()


def test_validate_makes_each_removal_and_graph_lists_the_skips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(removal_study(["none", "dec1_skip", "dec1_skip+dec2_skip"])))
    assert main(["validate", str(path)]) == 0
    assert "2 removal(s) made on the built model" in capsys.readouterr().out
    assert main(["graph", str(path)]) == 0
    out = capsys.readouterr().out
    assert "dec2_skip (Concatenate, skip): inputs from dec2_up, enc2_act; keeps dec2_up" in out
    assert "model.remove: [none, dec2_skip+dec1_skip]" in out
    assert main(["graph", str(path), "--cell", "9"]) == 2
    assert "cells 1 to 3" in capsys.readouterr().err


def test_an_ablated_variant_trains_and_mlflow_records_its_setting_and_size(tmp_path: Path) -> None:
    from ablate.project import resolve_project

    project = resolve_project(home=tmp_path / "home")
    raw = removal_study(["none", "dec1_skip+dec2_skip"])
    with StudyProgress(Console(file=io.StringIO())) as progress:
        outcome = run_study(spec_from_dict(raw), project, progress=progress)
    assert (outcome.complete, outcome.failed) == (2, 0)
    trials = optuna.load_study(study_name="removal", storage=project.storage).trials
    client = MlflowClient(project.tracking_uri)
    runs = {client.get_run(t.user_attrs["mlflow_run_id"]).data.params["model.remove"]: client.get_run(t.user_attrs["mlflow_run_id"]) for t in trials}
    no_skip = build_unet(ModelConfig(filters=4, depth=2, skip="none"), SHAPE).count_params()
    assert runs["dec1_skip+dec2_skip"].data.metrics["parameters"] == no_skip
    assert runs["none"].data.metrics["parameters"] > no_skip


def test_a_study_stored_before_model_remove_existed_still_resumes() -> None:
    spec = spec_from_dict(tiny_study()).spec.fingerprint()
    old = {**spec, "model": {k: v for k, v in spec["model"].items() if k != "remove"}}
    assert _differences(old, spec) == []
    changed = {**spec, "model": {**spec["model"], "remove": "dec1_skip"}}
    assert _differences(old, changed) == ["model.remove: None -> 'dec1_skip'"]


def test_remove_auto_is_one_level_per_skip_of_the_built_model_and_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "study.yaml"
    raw = {**removal_study([]), "factors": {"model.remove": "auto"}, "design": "one-at-a-time"}
    path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "none, dec2_skip, dec1_skip" in out and "2 removal(s)" in out
    home = tmp_path / "home"
    assert main(["run", str(path), "--home", str(home)]) == 0, capsys.readouterr().err
    from ablate.project import resolve_project

    project = resolve_project(home=home)
    trials = optuna.load_study(study_name="removal", storage=project.storage).trials
    assert sorted(t.params["model.remove"] for t in trials) == ["dec1_skip", "dec2_skip", "none"]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_remove_auto_on_a_model_without_skips_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**removal_study([], skip="none"), "factors": {"model.remove": "auto"}}))
    home = tmp_path / "home"
    for command in (["validate", str(path)], ["graph", str(path)], ["run", str(path), "--home", str(home)]):
        assert main(command) == 2
        assert "model.remove: auto found no skip connection in model 'unet_none'" in capsys.readouterr().err
    assert not home.exists()
