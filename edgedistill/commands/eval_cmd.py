"""``edgedistill eval``."""

from __future__ import annotations

import click
from rich.markup import escape

from edgedistill.commands.common import friendly_errors, json_option, print_json
from edgedistill.ui import out_console, pct, si, table


@click.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--role", type=click.Choice(["student", "teacher", "online-teacher"]), default="student", show_default=True,
              help="Which network of a run directory.")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--data-dir", help="Folder holding the dataset (default: its usual place).")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate on the first N images only.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N | auto.")
@json_option
@friendly_errors
def eval_command(checkpoint: str, role: str, which: str, split: str, data_dir: str | None, limit: int | None,
                 device: str, as_json: bool) -> None:
    """Top-1 accuracy of a trained network (a .pt file, or a run directory + --role)."""
    from edgedistill.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, role, which, split, data_dir, limit=limit, device=device)
    if as_json:
        print_json(result.to_dict())
        return
    out_console.print(table(  # cells and title are rich markup: paths like runs/[a] must be escaped
        escape(f"{result.model} on {result.dataset} ({result.split}, {result.images} images)"),
        ["checkpoint", "top-1", "params", "MACs"],
        [(escape(result.checkpoint), pct(result.top1), si(result.params), si(result.macs))],
    ))


COMMANDS = [eval_command]
