"""The shipped study files: each validates with each of its profiles, starts with its question,
and the commands in its header run it under names that do not collide. No training.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from ablate.cli.main import build_parser, main
from ablate.report.reproduction import load_reproduction
from ablate.spec.levels import cell_key
from ablate.spec.loading import load_spec

from conftest import REPO

STUDIES = sorted((REPO / "studies").glob("*.yaml"))


def profiles_of(path: Path) -> list[str | None]:
    """None (the file as written) and every profile the file defines."""
    return [None, *(yaml.safe_load(path.read_text()).get("profiles") or {})]


def header(path: Path) -> list[str]:
    """The comment lines before the first setting, without their `#`."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.removeprefix("#").strip())
    return lines


def header_commands(path: Path) -> list[list[str]]:
    """The `ablate ...` commands of a header, continuation lines joined, trailing comments cut."""
    commands: list[list[str]] = []
    pending = ""
    for line in header(path):
        if not (pending or line.startswith("ablate ")):
            continue
        text = pending + line.partition(" #")[0].strip()
        if text.endswith("\\"):
            pending = text[:-1]
            continue
        pending = ""
        commands.append(shlex.split(text))
    return commands


def test_every_study_file_is_checked() -> None:
    assert len(STUDIES) >= 8, STUDIES
    assert REPO / "studies" / "loco_unet.yaml" in STUDIES


@pytest.mark.parametrize(
    ("path", "profile"),
    [(path, profile) for path in STUDIES for profile in profiles_of(path)],
    ids=lambda value: value.name if isinstance(value, Path) else str(value),
)
def test_study_validates_with_each_profile(path: Path, profile: str | None, capsys) -> None:
    argv = ["validate", str(path)] + ([] if profile is None else ["--profile", profile])
    assert main(argv) == 0, capsys.readouterr().err
    assert f"{path} is valid" in capsys.readouterr().err


@pytest.mark.parametrize("path", STUDIES, ids=lambda path: path.name)
def test_the_question_comes_first(path: Path) -> None:
    lines = header(path)
    assert lines and lines[0].startswith("Question: "), f"{path.name} starts with {lines[:1]}"
    assert len(lines[0]) > len("Question: ") + 20, lines[0]
    assert load_spec(path).spec.description.strip(), f"{path.name}: no description (the report's title)"


@pytest.mark.parametrize("path", STUDIES, ids=lambda path: path.name)
def test_header_commands_run_this_file_under_distinct_names(path: Path) -> None:
    commands = header_commands(path)
    assert commands, f"{path.name}: the header shows no command"
    parser = build_parser()
    made: dict[str, list[str]] = {}  # study name -> the header command that makes it from this file
    sources: list[str] = []  # studies made from other files (an ensemble's members)
    reports: list[str] = []
    for argv in commands:
        assert argv[0] == "ablate", argv
        args = parser.parse_args(argv[1:])  # an unknown command or flag exits here
        if argv[1] == "report":
            reports.append(args.name)
            continue
        if argv[1] in ("validate", "graph"):  # they make no study
            continue
        if argv[1] == "run":
            loaded = load_spec(REPO / args.study_file, profile=args.profile, overrides=args.overrides)
        elif argv[1] == "reproduce":
            loaded = load_reproduction(args.name, profile=args.profile, overrides=tuple(args.overrides))
        else:
            raise AssertionError(f"{path.name}: unexpected command {argv}")
        name = loaded.spec.name
        if loaded.path is None or loaded.path.name != path.name:
            sources.append(name)
            continue
        assert name not in made, f"{path.name}: {argv} and {made[name]} both make study {name!r}"
        made[name] = argv
        # Overrides that change what a resumed study must keep (engine, sampler, ...) need a name of
        # their own, or the run collides with the study the command makes without them.
        plain = load_spec(loaded.path, profile=loaded.profile).spec
        if plain.fingerprint() != loaded.spec.fingerprint():
            assert name != plain.name, f"{path.name}: {shlex.join(argv)} needs --set name=... (it is {name!r} either way)"
    assert made, f"{path.name}: no header command runs this file"
    for name in reports:
        assert name in made, f"{path.name}: `ablate report {name}` names no study its commands make ({sorted(made)})"
    spec = load_spec(path).spec
    if spec.model.family == "ensemble" and spec.ensemble.source == "study":
        assert spec.ensemble.study in sources, f"{path.name}: the header does not make {spec.ensemble.study}"


@pytest.mark.parametrize("profile", profiles_of(REPO / "studies" / "loco_unet.yaml"))
def test_loco_unet_leaves_out_one_component_at_a_time(profile: str | None) -> None:
    spec = load_spec(REPO / "studies" / "loco_unet.yaml", profile=profile).spec
    full = {
        "model.skip": "concat", "model.block": "residual", "model.residual_blocks": 1,
        "model.batch_norm": True, "model.dropout": 0.1, "model.upsampling": "transpose",
    }
    plain = {name: level for name, level in full.items() if name != "model.residual_blocks"}
    expected = [
        full,
        {**full, "model.skip": "none"},
        {**plain, "model.block": "plain"},  # residual_blocks leaves with the residual blocks
        {**full, "model.batch_norm": False},
        {**full, "model.dropout": 0.0},
        {**full, "model.upsampling": "upsample"},
    ]
    assert [cell_key(cell) for cell in spec.cells()] == [cell_key(cell) for cell in expected]
    assert spec.planned_trials == 6 * spec.repeats
    configs = [spec.run_config(cell, seed=spec.seed).model for cell in spec.cells()]
    assert [c.block for c in configs] == ["residual", "residual", "plain", "residual", "residual", "residual"]
    assert configs[2].residual_blocks == 0
