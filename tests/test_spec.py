"""Study files: valid ones load, bad ones are refused with the field path and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ablate.spec.errors import SpecError
from ablate.spec.levels import cell_key
from ablate.spec.loading import load_spec, spec_from_dict

from conftest import REPO, tiny_study


def refused(raw: dict, **kwargs) -> str:
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw, source="study.yaml", **kwargs)
    return str(info.value)


def test_shipped_study_and_profiles_load() -> None:
    loaded = load_spec(REPO / "studies" / "skip_vs_noskip.yaml", profile="quick")
    spec = loaded.spec
    assert spec.name == "skip-vs-noskip-quick"
    assert spec.model.filters == 16 and spec.data.dataset == "mnist-embedded"
    assert spec.cells() == [{"model.skip": "none"}, {"model.skip": "concat"}]
    slides = load_spec(REPO / "studies" / "skip_vs_noskip.yaml", profile="slides").spec
    assert (slides.data.dataset, slides.model.filters, slides.train.epochs, slides.train.batch_size) == ("mnist", 64, 20, 128)


def test_overrides_apply_after_profile_and_are_validated() -> None:
    spec = spec_from_dict(tiny_study(), overrides=["train.epochs=1", "data.train_size=512", "factors.model.filters=[4, 8]"]).spec
    assert spec.train.epochs == 1 and spec.data.train_size == 512
    assert len(spec.cells()) == 4
    message = refused(tiny_study(), overrides=["train.epochs=0"])
    assert "train.epochs" in message and "greater than or equal to 1" in message and "--set train.epochs=0" in message


@pytest.mark.parametrize(
    ("change", "path", "expected"),
    [
        ({"modle": {}}, "modle", "unknown key"),
        ({"train": {"epochs": "many"}}, "train.epochs", "valid integer"),
        ({"factors": {"model.skip": []}}, "factors", "no levels"),
        ({"train": {"learning_rate": -1}}, "train.learning_rate", "greater than 0"),
        ({"data": {"dataset": "cifar"}}, "data.dataset", "'mnist-embedded', 'mnist', 'fashion-mnist', 'arrays', 'images' or 'python'"),
        ({"factors": {"model.skipp": ["none"]}}, "factors", "not a setting"),
        ({"factors": {"model.skip": ["none", "sideways"]}}, "factors.model.skip[1]", "'none', 'concat' or 'add'"),
        ({"factors": {"model.depth": [2, 3]}}, "factors.model.depth[1]", "non-integer size"),
        ({"repeats": 0}, "repeats", "greater than or equal to 1"),
        ({"name": "Has Spaces"}, "name", "pattern"),
    ],
)
def test_bad_files_name_the_field(change: dict, path: str, expected: str) -> None:
    message = refused(tiny_study(**change))
    assert path in message, message
    assert expected in message, message
    assert message.startswith("study.yaml")


def test_unknown_profile_lists_known_ones() -> None:
    raw = tiny_study(profiles={"fast": {"train.epochs": 1}})
    assert "no profile 'slow'; this file defines: fast" in refused(raw, profile="slow")


def test_bad_override_syntax() -> None:
    assert "expected dotted.name=value" in refused(tiny_study(), overrides=["train.epochs"])


def test_missing_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(SpecError, match="no such study file"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_cell_keys_and_run_config() -> None:
    spec = spec_from_dict(tiny_study(factors={"model.skip": ["none", "add"], "train.learning_rate": [0.001]})).spec
    cells = spec.cells()
    assert [cell_key(c) for c in cells] == [
        "model.skip=none,train.learning_rate=0.001",
        "model.skip=add,train.learning_rate=0.001",
    ]
    run = spec.run_config(cells[1], seed=7)
    assert run.model.skip == "add" and run.seed == 7
    assert run.flat()["model.skip"] == "add" and run.flat()["data.noise.factor"] == 0.5
    assert spec.seeds == [0, 1]


def test_block_follows_residual_blocks_in_a_grid() -> None:
    spec = spec_from_dict(tiny_study(factors={"model.residual_blocks": [0, 2]})).spec
    blocks = [spec.run_config(cell, seed=0).model.block for cell in spec.cells()]
    assert blocks == ["plain", "residual"]
    spec = spec_from_dict(tiny_study(factors={"model.block": ["plain", "inception"]})).spec
    assert [spec.run_config(c, seed=0).model.block for c in spec.cells()] == ["plain", "inception"]
    message = refused(tiny_study(factors={"model.block": ["plain", "residual"]}))
    assert "factors.model.block[1]" in message and "residual_blocks >= 1" in message


@pytest.mark.parametrize("experiment", ["../../escape", "a/b", "/etc", "..", "a\\b", "with space", "", "Upper"])
def test_an_experiment_name_cannot_become_a_path_outside_the_project(experiment: str) -> None:
    from ablate.spec.errors import SpecError
    from ablate.spec.loading import spec_from_dict

    with pytest.raises(SpecError, match="tracking.experiment"):
        spec_from_dict({"name": "s", "tracking": {"experiment": experiment}})
    assert spec_from_dict({"name": "s", "tracking": {"experiment": "my-exp.v2"}}).spec.experiment == "my-exp.v2"


def _bomb_flow(levels: int = 9) -> str:
    """A 'billion laughs' as one YAML flow value: each anchor repeats the one before it nine times."""
    parts = ["&a0 [" + ", ".join(["lol"] * 9) + "]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"  # 9**9 (387 million) values once expanded, in about 400 bytes


@pytest.mark.parametrize("where", ["factor", "description", "profile", "set"])
def test_a_yaml_alias_bomb_is_refused_with_a_short_message(tmp_path: Path, where: str) -> None:
    from ablate.spec.loading import check_profiles

    bomb = _bomb_flow()
    body = {
        "factor": f"factors:\n  model.filters: {bomb}\n",
        "description": f"description: {bomb}\n",
        "profile": f"profiles:\n  big:\n    description: {bomb}\n",
        "set": "",
    }[where]
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\n" + body)
    with pytest.raises(SpecError, match="expands to more than 100,000 values") as caught:
        if where == "set":
            load_spec(path, overrides=[f"description={bomb}"])
        else:
            check_profiles(path)
    assert len(str(caught.value)) < 1_000  # the message never echoes the expanded input


def test_an_error_echoes_at_most_a_few_hundred_characters_of_its_input() -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_dict({"name": "s", "train": {"epochs": "x" * 1_000_000}})
    assert "train.epochs" in str(caught.value) and len(str(caught.value)) < 1_000


def test_every_profile_of_a_thousand_is_checked_from_one_read(tmp_path: Path) -> None:
    from ablate.spec.loading import check_profiles

    raw = {**tiny_study(name="many"), "profiles": {f"p{i}": {"train": {"epochs": 1 + i % 3}} for i in range(1000)}}
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert len(check_profiles(path).spec.profiles) == 1000
    raw["profiles"]["p500"] = {"train": {"epochs": 0}}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="profile 'p500'"):
        check_profiles(path)
