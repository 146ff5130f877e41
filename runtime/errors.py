"""Errors a user can act on. The CLI prints their message as one line and exits non-zero."""

from typing import Any


class EdgeKVError(Exception):
    """Base class: a problem with the user's input, explained in the message."""


class BundleError(EdgeKVError):
    """A bundle is missing, corrupt, or from another schema version."""


class BudgetError(EdgeKVError):
    """The KV budget cannot hold what was asked of it."""


class PolicyError(EdgeKVError):
    """An unknown policy or a bad policy parameter."""


class ModelError(EdgeKVError):
    """A model that cannot be found, loaded or exported."""


class ProfileError(EdgeKVError):
    """A device profile that cannot be found, or a profile file with a bad field."""


class ImageError(EdgeKVError):
    """An image that cannot be read or has the wrong shape for the bundle's vision graph."""


class SettingError(EdgeKVError, ValueError):
    """A setting outside its range (a sampler's temperature, a count that must be positive)."""


def whole_number(value: Any) -> bool:
    """A count as Python or numpy int; not a bool (True would count as 1)."""
    import numpy as np

    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
