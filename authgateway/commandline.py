"""The command line's entry: the ``authgateway`` command, and the app that ``flask --app
authgateway`` and ``authgateway`` build for the commands (authgateway.cli holds the commands)."""

from __future__ import annotations

from typing import NoReturn

import click
from flask import Flask
from flask.cli import FlaskGroup, ScriptInfo

from .app import build_app
from .cli import keys, load_dev_settings
from .errors import ConfigError


def run_by_a_command() -> bool:
    """Whether Flask's command line (``flask --app authgateway``, ``authgateway``) is loading
    the app."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.find_object(ScriptInfo) is not None


def command_app() -> Flask:
    """The app as the commands see it: development settings found, no key needed until
    something encrypts or decrypts, and a wrong setting reported as its sentence alone."""
    try:
        load_dev_settings()
        return build_app(key_required=False)
    except ConfigError as exc:
        # Not a ClickException: Flask's command line prints the traceback of any other error
        # while it lists the commands for --help. A SystemExit passes through it.
        _stop(exc)


def _stop(exc: ConfigError) -> NoReturn:
    click.echo(f"Error: {exc}", err=True)
    raise SystemExit(1)


@click.group(cls=FlaskGroup, create_app=command_app, add_version_option=False,
             load_dotenv=False, set_debug_flag=False)
def main() -> None:
    """authgateway: the OAuth token gateway for MCP servers."""


main.add_command(keys)
