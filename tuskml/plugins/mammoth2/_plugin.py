"""Hookimpls of the built-in ``mammoth2`` plugin. Imports only torch-free config modules."""

from __future__ import annotations

from tuskml.core.hookspecs import hookimpl
