"""What the `alchemist` commands share: how bad input ends a command, and the options several of them take."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer


@contextmanager
def exit_on(*errors: type[Exception]) -> Iterator[None]:
    """Bad input (one of ``errors``) is printed in red on stderr and ends the command with exit code 2.

    Only the named errors are the user's; anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except errors as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(2) from err


def set_option(help: str) -> Any:
    """The repeatable ``--set KEY=VALUE`` option that overrides a config field (parse it with ``profile_settings``
    or ``alchemist_data.config.parse_overrides``)."""
    return typer.Option(None, "--set", help=help)


def ray_address_option() -> Any:
    """``--ray-address``: every command that uses Ray joins or starts it through ``alchemist_data.raycluster``."""
    return typer.Option(
        None,
        "--ray-address",
        help="Join a running Ray cluster: auto (the one `ray start` made here), host:port or ray://host:10001. "
        "Without it a job that uses Ray starts its own local Ray instance.",
    )


def profile_settings(profile: str, set_: list[str] | None) -> dict[str, Any]:
    """``--profile`` and ``--set`` as the ``profile=`` and ``overrides=`` arguments the curate and eval APIs take."""
    from alchemist_data.config import parse_overrides

    return {"profile": profile, "overrides": parse_overrides(set_)}
