"""Running a typer app the way every gptnl command runs: user errors print one red line and exit 2;
`--debug` (anywhere on the line) shows the traceback instead.

The `gptnl` CLI (gptnl/cli.py) and the launcher entry points (`python -m gptnl.train`, `-m gptnl.finetune`,
which torchrun, srun and accelerate start once per process) share this, so an entry point loads its
own command and not the whole CLI."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from gptnl.errors import GptnlError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False)
SET_HELP = "Override a config field, as section.key=value (repeatable; the value is read as YAML)."


def run(app: typer.Typer, argv: list[str] | None = None, prog_name: str = "gptnl") -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        # standalone mode: typer reports usage errors itself (exit 2) and turns typer.Exit into the exit code
        app(args=args, prog_name=prog_name)
    except GptnlError as exc:
        if debug:
            raise
        err_console.print(f"[red]error: {exc}", soft_wrap=True)
        sys.exit(2)


def single(command) -> typer.Typer:
    """A typer app of one command (run without naming it), for an entry point."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(command)
    return app
