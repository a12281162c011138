"""Every error tuskml raises on purpose derives from :class:`TuskmlError`.

Each one says what is wrong and names the thing at fault (component, field, file, plugin), so a user
never has to read a traceback to find out which input was bad.
"""

from __future__ import annotations


class TuskmlError(Exception):
    """Base class of tuskml's own errors."""


class UnknownComponentError(TuskmlError, LookupError):
    """A component name that no loaded plugin registered."""

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


class UnknownKindError(TuskmlError, LookupError):
    """A registry kind (``decoders``, ``backbones`` ...) that does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(TuskmlError):
    """Two plugins registered the same name in the same registry."""


class InvalidSpecError(TuskmlError):
    """A plugin returned a malformed ComponentSpec."""


class ConfigError(TuskmlError, ValueError):
    """A config value or file that cannot be turned into a config object.

    ``problems`` lists ``(path, message)`` pairs such as ``("decoder.depth", "expected int, got 'four'")``.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.problems = problems or []


class CheckpointError(TuskmlError):
    """A checkpoint file that cannot be read back into a component."""


class PluginError(TuskmlError):
    """A plugin that could not be loaded or whose hook failed."""
