"""Project error types.

Every error a user can cause (a bad file, a bad argument, a diverged run) is an ``AttnvizError``
whose message is one human sentence. The CLI prints it as ``error: <message>`` and exits 2; the app
shows it in place of the result. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AttnvizError(Exception):
    """Base class: ``str(err)`` is a single sentence meant for the user."""


class SpecError(AttnvizError, ValueError):
    """A model spec string or a constructor argument is not valid."""


class CheckpointError(AttnvizError):
    """A checkpoint file is missing, malformed, unsafe or inconsistent with its card."""


class ImageError(AttnvizError):
    """An image cannot be decoded safely."""


class DatasetError(AttnvizError):
    """A dataset name, folder or archive cannot be used."""


class TrainingError(AttnvizError):
    """A training run stopped before it finished."""


class TrainingDiverged(TrainingError):
    """The loss became non-finite; the last good checkpoint was kept."""


class TrainingCancelled(TrainingError):
    """The run was cancelled; the last consistent checkpoint was kept."""
