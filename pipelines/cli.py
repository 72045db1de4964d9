"""The `alchemist` command line. Each pipelines module registers its own commands."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="alchemist",
    help="Video Alchemist: curate captioned videos, train the personalization model, generate, and evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules that define `register(app)`. Heavy imports (torch, ray) happen inside the commands, so --help is fast.
COMMAND_MODULES = [  # in the order a user meets them (--help lists commands in this order)
    "pipelines.sample_data_cmd",
    "pipelines.curate",
    "pipelines.report_cmd",
    "pipelines.entities_cmd",
    "pipelines.encode",
    "pipelines.train",
    "pipelines.generate",
    "pipelines.evaluate",
    "pipelines.demo",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
