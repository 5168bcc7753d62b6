"""The denoising autoencoder: noisy image in, clean image out (the slides' skip-vs-no-skip model)."""

from __future__ import annotations

import keras

from ablate.models import build_unet
from ablate.models.surgery import ablated
from ablate.spec.run_config import RunConfig
from ablate.spec.study_spec import FAMILY_METRICS
from ablate.training.data import load_splits, training_noise
from ablate.training.family import BuiltinFamily, TrialContext, TrialResult
from ablate.training.fit import compile_model, fit
from ablate.training.images import reconstruction_grid
from ablate.training.trial import log_model, model_summary


def build(run: RunConfig, input_shape: tuple[int, ...]) -> keras.Model:
    """The trial's U-Net, with the layers `model.remove` names removed."""
    return ablated(build_unet(run.model, input_shape), run.model.removed)  # type: ignore[arg-type]


def train(run: RunConfig, context: TrialContext) -> TrialResult:
    """Train the U-Net on (noisy, clean) pairs; log metrics per epoch and reconstruction grids."""
    tracking, log = context.tracking, context.log
    splits = load_splits(run.data)
    x_train_noisy = training_noise(splits.x_train, run.data, run.seed)
    model = build(run, splits.shape)
    compile_model(model, run.train)
    log.log_text(model_summary(model), "model_summary.txt")
    parameters = int(model.count_params())

    fixed_clean = splits.x_val[: tracking.images]
    fixed_noisy = splits.x_val_noisy[: tracking.images]

    def picture(name: str) -> None:
        # A direct call, not predict(): predict() builds a new tf.function for each new model.
        reconstructed = keras.ops.convert_to_numpy(model(fixed_noisy, training=False))
        log.log_image(reconstruction_grid(fixed_clean, fixed_noisy, reconstructed), f"reconstructions/{name}.png")

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        log.log_metrics(epoch, metrics)
        context.progress.epoch(epoch, metrics)
        if tracking.image_every and epoch % tracking.image_every == 0 and epoch != run.train.epochs:
            picture(f"epoch_{epoch:03d}")
        if context.report is not None:
            context.report(epoch, {**metrics, "parameters": float(parameters)})

    batches = -(-len(splits.x_train) // run.train.batch_size)
    context.progress.start_trial(context.label, run.train.epochs, batches)
    result = fit(
        model,
        x_train_noisy=x_train_noisy,
        x_train=splits.x_train,
        x_val_noisy=splits.x_val_noisy,
        x_val=splits.x_val,
        cfg=run.train,
        seed=run.seed,
        on_epoch=on_epoch,
        on_batch=context.progress.batch,
    )
    picture("final")
    log_model(model, log, tracking)
    return TrialResult.of_fit(result, parameters)


FAMILY = BuiltinFamily(name="unet", metrics=FAMILY_METRICS["unet"], pictures=("reconstructions/epoch_NNN.png", "reconstructions/final.png"), train_function=train, build_function=build)
