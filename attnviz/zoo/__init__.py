"""The shipped zoo: which models, one shared recipe, resumable training (see :mod:`attnviz.zoo.entries`)."""

from attnviz.zoo.entries import (
    DEFAULT_DATA,
    RETRAIN_COMMAND,
    ZOO,
    ZOO_NOTES,
    ZOO_RECIPE,
    accuracy_bar,
    default_out_dir,
)
from attnviz.zoo.readme import write_readme
from attnviz.zoo.training import _main, ship, train_all

__all__ = ["DEFAULT_DATA", "RETRAIN_COMMAND", "ZOO", "ZOO_NOTES", "ZOO_RECIPE", "_main", "accuracy_bar",
           "default_out_dir", "ship", "train_all", "write_readme"]
