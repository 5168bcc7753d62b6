"""The U-Net builder: shapes, parameter counts, and how each skip mode wires the graph."""

from __future__ import annotations

import pytest

from ablate.config import ModelConfig
from ablate.models import build_unet

SHAPE = (28, 28, 1)


@pytest.mark.parametrize(
    ("skip", "parameters"),
    [
        # Counted by hand for the slides' model (3x3 kernels, 64/128/256 filters):
        # enc1 640 + enc2 73,856 + bottleneck 295,168 + dec2 295,040 + dec1 + output.
        ("none", 640 + 73_856 + 295_168 + 295_040 + 73_792 + 577),
        # concat doubles the channels entering dec1 (256) and the output conv (128).
        ("concat", 640 + 73_856 + 295_168 + 295_040 + 147_520 + 1_153),
        ("add", 640 + 73_856 + 295_168 + 295_040 + 73_792 + 577),
    ],
)
def test_slides_model_parameter_counts(skip: str, parameters: int) -> None:
    model = build_unet(ModelConfig(filters=64, depth=2, skip=skip), SHAPE)
    assert model.count_params() == parameters
    assert model.output_shape == (None, 28, 28, 1)


def test_concat_doubles_the_channel_axis_and_add_keeps_it() -> None:
    concat = build_unet(ModelConfig(filters=8, skip="concat"), SHAPE)
    assert concat.get_layer("dec2_skip").output.shape == (None, 14, 14, 32)
    assert concat.get_layer("dec1_skip").output.shape == (None, 28, 28, 16)
    add = build_unet(ModelConfig(filters=8, skip="add"), SHAPE)
    assert add.get_layer("dec2_skip").output.shape == (None, 14, 14, 16)
    none = build_unet(ModelConfig(filters=8, skip="none"), SHAPE)
    assert not any(layer.name.endswith("_skip") for layer in none.layers)


def test_residual_blocks_project_where_channels_differ() -> None:
    model = build_unet(ModelConfig(filters=8, residual_blocks=2, skip="none"), SHAPE)
    names = {layer.name for layer in model.layers}
    # The first block of a stage changes the channel count, so it projects; the second does not.
    assert {"enc1_res1_proj", "enc1_res1_add", "enc1_res2_add"} <= names
    assert "enc1_res2_proj" not in names
    assert model.get_layer("bottleneck_res2_add").output.shape == (None, 7, 7, 32)
    plain = build_unet(ModelConfig(filters=8, residual_blocks=0, skip="none"), SHAPE)
    assert model.count_params() > plain.count_params()


def test_transpose_upsampling_and_depth_one() -> None:
    model = build_unet(ModelConfig(filters=4, depth=1, upsampling="transpose"), SHAPE)
    assert model.get_layer("dec1_up").__class__.__name__ == "Conv2DTranspose"
    assert model.output_shape == (None, 28, 28, 1)


def test_inception_block_concatenates_four_branches_to_the_stage_width() -> None:
    model = build_unet(ModelConfig(filters=8, block="inception", skip="concat"), SHAPE)
    concat = model.get_layer("enc1_inc_concat")
    assert len(concat.input) == 4 and concat.output.shape == (None, 28, 28, 8)
    assert model.get_layer("bottleneck_inc_concat").output.shape == (None, 7, 7, 32)
    assert model.output_shape == (None, 28, 28, 1)


def test_batch_norm_and_dropout_switches() -> None:
    plain = build_unet(ModelConfig(filters=4), SHAPE)
    switched = build_unet(ModelConfig(filters=4, batch_norm=True, dropout=0.25), SHAPE)
    kinds = [type(layer).__name__ for layer in switched.layers]
    assert kinds.count("BatchNormalization") == 5 and kinds.count("Dropout") == 5  # one per stage
    assert "BatchNormalization" not in [type(layer).__name__ for layer in plain.layers]
    # BatchNormalization adds 4 weights per channel (gamma, beta, moving mean and variance).
    assert switched.count_params() - plain.count_params() == 4 * (4 + 8 + 16 + 8 + 4)


def test_block_and_residual_blocks_must_agree() -> None:
    from pydantic import ValidationError

    assert ModelConfig().block == "plain" and ModelConfig(residual_blocks=2).block == "residual"
    with pytest.raises(ValidationError, match="needs model.residual_blocks >= 1"):
        ModelConfig(block="residual")
    with pytest.raises(ValidationError, match="applies only to model.block: residual"):
        ModelConfig(block="inception", residual_blocks=1)
