"""Listing commands: ``edgedistill models`` and ``edgedistill datasets``."""

from __future__ import annotations

import click
from rich.markup import escape

from edgedistill.commands.common import KindOptionsCommand, ListingOption, friendly_errors, json_option, kind_names, kind_settings, print_json
from edgedistill.ui import out_console, si, table


@click.command("models", cls=KindOptionsCommand)
@click.option("--kind", "-k", default="shift", show_default=True, cls=ListingOption, listing=kind_names,
              help="Cheap conv of the student column: {names}.")
@click.option("--in-channels", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--image-size", type=click.IntRange(min=1), default=32, show_default=True)
@json_option
@friendly_errors
def models_command(kind: str, in_channels: int, image_size: int, as_json: bool, **params: object) -> None:
    """The registered architectures, with params and MACs of teacher and student."""
    from edgedistill.cheap.kinds import spec_from_settings
    from edgedistill.errors import EdgeDistillError, ToolchainError
    from edgedistill.models import ModelSpec, model_names, spec_complexity

    cheap = spec_from_settings(kind, kind_settings(params))
    shape = (1, in_channels, image_size, image_size)
    rows = []
    for name in model_names():
        if name == "online-teacher":
            continue
        try:  # on the meta device: shapes only, the same counts as real weights in a fraction of the time
            teacher = spec_complexity(ModelSpec(name, 10, in_channels), shape)
            student = spec_complexity(ModelSpec(name, 10, in_channels, cheap=cheap), shape)
        except EdgeDistillError as exc:  # torchvision missing, or channels not divisible by --groups
            rows.append({"model": name, "unavailable": exc.message if not isinstance(exc, ToolchainError) else "needs torchvision"})
            continue
        except RuntimeError:  # the network subsamples an input this small down to nothing
            rows.append({"model": name, "unavailable": f"input {image_size}×{image_size} too small"})
            continue
        rows.append({"model": name, "teacher": teacher.to_dict(), "student": student.to_dict()})
    if as_json:
        print_json(rows)
        return
    out_console.print(table(
        f"models at {in_channels}×{image_size}×{image_size}, 10 classes; student = {kind}",
        ["model", "teacher params", "teacher MACs", "student params", "student MACs", "MACs ratio"],
        [
            (escape(r["model"]), si(r["teacher"]["params"]), si(r["teacher"]["macs"]), si(r["student"]["params"]),
             si(r["student"]["macs"]), f"{r['teacher']['macs'] / r['student']['macs']:.1f}×")
            if "teacher" in r else (escape(r["model"]), escape(r["unavailable"]), None, None, None, None)
            for r in rows
        ],
    ))


@click.command("datasets")
def datasets_command() -> None:
    """The dataset names --dataset accepts."""
    from edgedistill.data import dataset_names

    for name in dataset_names():
        click.echo(name)


COMMANDS = [models_command, datasets_command]
