"""Hookimpls of the built-in ``tinyformer`` plugin (CLI: ``tuskml tinyformer ...``)."""

from __future__ import annotations

from tuskml.core.hookspecs import hookimpl


@hookimpl
def tuskml_cli_commands(cli):
    # `tuskml tinyformer deploy`; the command imports torch only when it runs
    from tuskml.plugins.tinyformer.deploy_cli import add_deploy_command

    add_deploy_command(cli)
