"""Hookimpls of the built-in ``tinyformer`` plugin (CLI: ``tuskml tinyformer ...``)."""

from __future__ import annotations

from tuskml.core.hookspecs import hookimpl
