"""The recipe: everything that defines a training run, declared once.

``Recipe`` is stored in the model card, and each of its fields is the ``classifier.train`` option of the
same name (``recipe_arguments`` builds the parser from the fields, ``recipe_from_args`` reads it back);
``AUGMENT_PRESETS`` are the augmentations ``--augment`` names.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from classifier.cells import BOXED_NEGATIVE_WEIGHT, CELL_STRIDES, CELL_TARGETS
from classifier.pipeline import AugmentSpec
from classifier.preprocessing import InputSpec

# The EfficientNet-Lite variants with registry ImageNet weights (depths: classifier.models.LITE_VARIANTS).
BACKBONES = ("lite0", "lite1")


def _option(default: Any, help: str, choices: Sequence[Any] | None = None) -> Any:
    """A recipe field that is also a command-line option (``--name-with-dashes``)."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class Recipe:
    """Everything that defines a training run, declared once: stored in the model card, and each field is
    the command-line option of the same name (``recipe_arguments`` builds the parser from these fields)."""

    arch: str = _option("lite0det", "the network", ("lite0det", "lite0", "seed", "tiny"))
    backbone: str = _option(
        "lite0", "lite0det: the EfficientNet-Lite backbone (registry ImageNet weights)", BACKBONES
    )
    size: int = _option(224, "input side in pixels (the letterboxed square)")
    clahe: bool = _option(False, "contrast-limited histogram equalisation before the network")
    epochs: int = _option(6, "training epochs")
    batch_size: int = _option(32, "images per step")
    lr: float = _option(1e-3, "peak learning rate (one-cycle cosine schedule)")
    weight_decay: float = _option(0.02, "AdamW weight decay")
    warmup: float = _option(0.15, "share of the steps warming the learning rate up")
    dropout: float = _option(0.2, "dropout before the head")
    drop_connect: float = _option(0.2, "stochastic depth in the backbone")
    bn_momentum: float = _option(0.9, "batch-normalisation momentum")
    label_smoothing: float = _option(0.0, "label smoothing of the image loss")
    freeze_epochs: int = _option(0, "epochs with the backbone frozen first (lite0)")
    balance_sources: bool = _option(False, "draw every source equally often")
    cluster_power: float = _option(0.0, "weigh images by 1 / cluster_size^p")
    class_balance: str = _option("source", "balance the classes per source or overall", ("source", "global"))
    optimizer: str = _option("adamw", "the optimiser", ("adamw", "adam"))
    tta: str = _option(
        "flip", "test-time augmentation in the serving graph", ("none", "flip", "rot4", "dihedral")
    )
    pooling: str = _option("mean", "logit map -> image logit (lse: log-sum-exp)", ("mean", "lse"))
    patience: int = _option(0, "early stopping patience in epochs (0: off)")
    cell_loss_weight: float = _option(1.0, "lite0det: weight of the per-cell localisation loss")
    cell_stride: int = _option(
        16, "lite0det: pixels per fracture cell (8: a finer head on the stride-8 stage too)", CELL_STRIDES
    )
    boxed_negative_weight: float = _option(
        BOXED_NEGATIVE_WEIGHT,
        "lite0det: weight of the cells outside the boxes of a boxed radiograph (a normal one's: 1)",
    )
    cell_target: str = _option(
        "coverage",
        "lite0det: the cell head's positives: the cells a third inside a box (coverage), or the cells on "
        "each box's central third, the rest of the box ignored (centre)",
        CELL_TARGETS,
    )
    consistency_weight: float = _option(
        0.0,
        "lite0det: weight of the squared logit difference between two augmented views of each image (0: off; "
        "a batch then holds batch_size / 2 images twice)",
    )
    ema_momentum: float = _option(
        0.0,
        "lite0det: evaluate and keep an exponential moving average of the weights, updated every step with "
        "this momentum (0: off; 0.99 averages over about the last 100 steps)",
    )
    # Not an option of its own: --augment names a preset, --rotation / --zoom adjust it.
    augment: AugmentSpec = field(default_factory=AugmentSpec)

    def input_spec(self) -> InputSpec:
        return InputSpec(size=self.size, clahe=self.clahe)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["augment"] = self.augment.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        values = dict(values)
        augment = AugmentSpec.from_dict(values.pop("augment", {}))
        return cls(augment=augment, **values)


def recipe_options() -> list[Any]:
    """The recipe's fields that are command-line options, in declaration order."""
    return [f for f in fields(Recipe) if f.name != "augment"]


def recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per recipe field; its default and help come from the field."""
    for option in recipe_options():
        flag = "--" + option.name.replace("_", "-")
        help_text = f"{option.metadata['help']} (default: {option.default})"
        if isinstance(option.default, bool):
            parser.add_argument(flag, action="store_true", help=option.metadata["help"])
        else:
            parser.add_argument(
                flag,
                type=type(option.default),
                default=option.default,
                choices=option.metadata["choices"],
                help=help_text,
            )


AUGMENT_PRESETS = {
    "none": AugmentSpec(hflip=False, rotation=0.0, zoom=0.0, shift=0.0, brightness=0.0, contrast=0.0),
    # The seeds' / the issue's quick recipe: flips, rotation +-15, scale, shift, brightness/contrast.
    "standard": AugmentSpec(),
    # The eight flips / right-angle turns that dihedral test-time augmentation averages over, then a
    # moderate rotation, zoom and shift: every TTA view stays in the training distribution.
    "medium": AugmentSpec(
        hflip=True,
        vflip=True,
        rot90=True,
        rotation=20.0,
        zoom=0.15,
        shift=0.1,
        brightness=0.1,
        contrast=0.2,
        gamma=0.1,
    ),
    # Every orientation: a right-angle turn and flips, then +-45 degrees (together: any angle), more zoom,
    # shift and contrast. The clusters of the Kaggle set are such copies, and so is a rotated upload.
    "strong": AugmentSpec(
        hflip=True,
        vflip=True,
        rot90=True,
        rotation=45.0,
        zoom=0.2,
        shift=0.12,
        brightness=0.15,
        contrast=0.25,
        gamma=0.2,
    ),
}


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe a parsed ``classifier.train`` command line asks for (its preset and adjustments)."""
    augment = AUGMENT_PRESETS[args.augment]
    if args.rotation is not None:
        augment = augment.with_(rotation=args.rotation)
    if args.zoom is not None:
        augment = augment.with_(zoom=args.zoom)
    return Recipe(**{option.name: getattr(args, option.name) for option in recipe_options()}, augment=augment)
