"""The model families ablate trains, and the registry the runtime looks them up in by `model.family`.

- `unet`: the denoising autoencoder of the slides (noisy image -> clean image).
- `diffusion`: the same network as an incremental denoiser (x_t -> x_{t-1}), evaluated by running
  the reverse chain from the noisiest step (`diffusion_process`).
- `ensemble`: a weighted sum of trained members (`ensemble_weights` scores and searches the weights).
- `custom`: the user's own functional model (`model.builder`), on their data, for their `task`.

Each family is one module with a `train(run, context)` function and its `FAMILY` entry (the
contract: `ablate.training.family.Family`). The families build Keras models, so importing the
registry imports Keras; only the runtime does, when it runs trials (the spec, the report and
`ablate --help` never import it).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ablate.errors import AblateError
from ablate.families import custom, diffusion, ensemble, unet
from ablate.spec.run_config import RunConfig
from ablate.training.arrays import load_arrays
from ablate.training.data import image_shape
from ablate.training.family import Family

FAMILIES: Mapping[str, Family] = MappingProxyType(
    {family.name: family for family in (unet.FAMILY, diffusion.FAMILY, ensemble.FAMILY, custom.FAMILY)}
)


class UnknownFamilyError(AblateError):
    """A `model.family` that no registered family answers to."""


def family_for(name: str) -> Family:
    """The registered family called `name`.

    Raises:
        UnknownFamilyError: naming the families there are.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamilyError(f"no model family {name!r}; the families are {', '.join(sorted(FAMILIES))}") from None


def input_shape(run: RunConfig) -> tuple[int, ...]:
    """The shape of one input of `run`'s model: the built-in families' 28x28 grey image without reading
    the data; a custom model's from its data (read once per process)."""
    return load_arrays(run.data).shape if run.model.family == "custom" else image_shape(run.data)


__all__ = ["FAMILIES", "UnknownFamilyError", "family_for", "input_shape"]
