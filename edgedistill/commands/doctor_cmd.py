"""``edgedistill doctor``."""

from __future__ import annotations

import sys

import click
from rich.markup import escape

from edgedistill.commands.common import friendly_errors, json_option, print_json
from edgedistill.ui import err_console, out_console, status_reporter, table


@click.command("doctor", epilog="Example: edgedistill doctor --require tests   (what CI runs before the test suite)")
@click.option("--require", "required", multiple=True, metavar="PURPOSE",
              help="Exit 1 when a piece needed for PURPOSE is missing (repeatable): core, demo, arm, board, tuning, plots, "
                   "tensorrt, tests.")
@click.option("--check", "names", multiple=True, metavar="NAME", help="Run only this check (repeatable).")
@json_option
@friendly_errors
def doctor_command(required: tuple[str, ...], names: tuple[str, ...], as_json: bool) -> None:
    """Check that every piece of the toolchain works here, and say how to fix what does not.

    Each check uses its piece (links a library with the cross compiler, compiles and runs a
    model with TVM, reads the dataset) rather than looking for a file. Exits 1 when a piece
    needed for a --require purpose (or for 'core', always) is missing.
    """
    from edgedistill.doctor import PURPOSES, CheckResult, failing_for, run_checks, to_dict
    from edgedistill.utils.names import unknown_name

    for purpose in required:
        if purpose not in PURPOSES:
            raise unknown_name("purpose", purpose, PURPOSES)
    with status_reporter("checking the toolchain", echo=False) as report:
        results = run_checks(list(names) or None, report)
    wanted = ["core", *required]
    failing = failing_for(results, wanted)
    if as_json:
        print_json({"checks": to_dict(results), "required": wanted, "ok": not failing})
    else:
        def status(result: CheckResult) -> str:
            return "ok" if result.ok else "MISSING" if result in failing else "not here"

        out_console.print(table(
            "edgedistill doctor", ["piece", "status", "detail", "fix", "needed for"],
            [(r.name, status(r), escape(r.detail), escape(r.fix) if r.fix else None, ", ".join(r.needed_for)) for r in results],
            caption=f"required: {', '.join(wanted)}  (--require PURPOSE adds one; 'tests' is what CI needs)",
        ))
        absent = [r.name for r in results if not r.ok and r not in failing]
        if absent:
            err_console.print(f"not here, and not required: {', '.join(absent)}", highlight=False)
        if failing:
            err_console.print(f"[bold red]error:[/] {len(failing)} required piece(s) missing: "
                              + escape(", ".join(r.name for r in failing)) + " — each row says how to fix it", highlight=False)
    if failing:
        sys.exit(1)


COMMANDS = [doctor_command]
