"""What a trial trains, per `model.family`: each module exposes `train(run, context) -> TrialResult`.

- `unet`: the denoising autoencoder of the slides (noisy image -> clean image).
- `diffusion`: the same network as an incremental denoiser (x_t -> x_{t-1}), evaluated by running
  the reverse chain from the noisiest step.
- `ensemble`: a weighted sum of trained members.
"""
