"""The model builders: U-Net shapes, parameter counts, how each skip mode wires the graph; the diffusion chain picture."""

from __future__ import annotations

import numpy as np
import pytest

from ablate.spec.run_config import DiffusionConfig, ModelConfig
from ablate.families.diffusion import chain_picture
from ablate.training.images import chain_grid
from ablate.models import build_unet
from ablate.models.denoiser import build_denoiser
from ablate.families.diffusion_process import reverse_chain

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


def test_the_chain_picture_shows_every_step_up_to_twenty_and_21_evenly_spaced_beyond() -> None:
    x_T = np.random.default_rng(0).uniform(0.0, 1.0, size=(2, 28, 28, 1)).astype(np.float32)
    clean = np.zeros_like(x_T)
    # Every step up to T = 20; beyond, 21 evenly spaced steps (rounded half to even), both ends kept.
    sampled = [30, 28, 27, 26, 24, 22, 21, 20, 18, 16, 15, 14, 12, 10, 9, 8, 6, 4, 3, 2, 0]
    for steps, shown in ((20, range(20, -1, -1)), (30, sampled)):
        diffusion = DiffusionConfig(steps=steps)
        model = build_denoiser(ModelConfig(filters=2, depth=1), diffusion, SHAPE)
        chain = reverse_chain(model, x_T, diffusion)  # x_T, ..., x_0: chain[k] is step T - k
        picture = chain_picture(model, x_T, diffusion, clean)
        frames = (picture.shape[1] // 2 + 2) // 30 - 1  # columns of 28 + 2 pixels, upscaled by 2, less the clean one
        assert frames == 21, (steps, frames)
        expected = chain_grid([chain[steps - t] for t in shown], clean)
        np.testing.assert_array_equal(picture, expected)
