"""``edgedistill train``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from edgedistill.commands.common import KindOptionsCommand, ListingOption, friendly_errors, json_option, kind_names, print_json
from edgedistill.ui import err_console, out_console, pct, si, table

if TYPE_CHECKING:
    from edgedistill.training import TrainSummary

# Every option defaults to None so that only flags the user typed override the config file.
_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--model", "-m"), {"help": "Architecture of teacher and student (see 'edgedistill models').  [default: resnet20]"}),
    (("--kind", "-k"), {"cls": ListingOption, "listing": kind_names,
                        "help": "Cheap convolution of the student: {names}.  [default: shift]"}),
    (("--keep",), {"multiple": True, "metavar": "NAME",
                   "help": "Keep this conv standard in the student (a name from model.named_modules(), e.g. "
                           "layers.0.conv1); repeatable. The stem is always kept."}),
    (("--method",), {"help": "od (the paper) | mutual | alone | kd | dml.  [default: od]"}),
    (("--students",), {"type": int, "help": "m, the number of cheap students of od.  [default: 4]"}),
    (("--network",), {"type": click.Choice(["student", "teacher"]), "help": "What --method alone trains.  [default: student]"}),
    (("--teacher-checkpoint",), {"help": "Trained standard-conv teacher for --method kd (run dir or .pt)."}),
    (("--temperature", "-T"), {"type": float, "help": "Distillation temperature T.  [default: 4]"}),
    (("--kl-weight",), {"type": float, "help": "Weight of each T²·KL term (per-sample mean).  [default: 1]"}),
    (("--dataset", "-d"), {"help": "fashion-mnist | cifar10 | cifar100 | imagefolder | digits.  [default: fashion-mnist]"}),
    (("--data-dir",), {"help": "Folder holding the dataset files (default: the dataset's usual place)."}),
    (("--download/--no-download",), {"default": None, "help": "Download the dataset (official URL, checksum verified) if missing."}),
    (("--val-size",), {"type": float, "help": "Validation split carved from train: a count, or a fraction < 1.  [default: 0.1]"}),
    (("--limit",), {"type": int, "help": "Use only N train and N test images (quick runs)."}),
    (("--image-size",), {"type": int, "help": "Model input size (default: the dataset's, e.g. 32)."}),
    (("--hflip/--no-hflip",), {"default": None, "help": "Random horizontal flips (default: on, off for digits)."}),
    (("--epochs", "-e"), {"type": int, "help": "Epochs.  [default: 2 (~8 min on a 2-core CPU); the paper uses 300]"}),
    (("--batch-size",), {"type": int, "help": "Batch size per process.  [default: 128]"}),
    (("--lr",), {"type": float, "help": "SGD learning rate.  [default: 0.1]"}),
    (("--momentum",), {"type": float, "help": "SGD momentum.  [default: 0.9]"}),
    (("--weight-decay",), {"type": float, "help": "Weight decay.  [default: 2e-4]"}),
    (("--schedule",), {"type": click.Choice(["multistep", "cosine", "constant"]), "help": "LR schedule.  [default: multistep]"}),
    (("--milestones",), {"help": "multistep: fractions of the run where lr ×= gamma.  [default: 0.5,0.75]"}),
    (("--gamma",), {"type": float, "help": "multistep decay factor.  [default: 0.1]"}),
    (("--seed",), {"type": int, "help": "Seed of initialisation, splits, order and augmentation.  [default: 0]"}),
    (("--device",), {"help": "auto | cpu | cuda | cuda:N.  [default: auto]"}),
    (("--amp/--no-amp",), {"default": None, "help": "Mixed precision (fp16) on CUDA.  [default: on]"}),
    (("--channels-last/--no-channels-last",), {"default": None, "help": "NHWC memory format: faster with oneDNN on CPU and tensor cores on GPU.  [default: on]"}),
    (("--threads",), {"type": int, "help": "CPU threads for torch (default: torch's choice)."}),
    (("--out", "-o"), {"help": "Run directory.  [default: runs/<time>-<method>-<model>-<kind>]"}),
]


def _with_train_options(command: Any) -> Any:
    for decls, kwargs in reversed(_OPTIONS):
        command = click.option(*decls, **{"default": None, **kwargs})(command)
    return command


def _overrides(params: dict[str, Any]) -> dict[str, Any]:
    values = {k: v for k, v in params.items() if v is not None and v != ()}
    if "keep" in values:  # repeatable, and "a,b" works too
        values["keep"] = [name.strip() for item in values["keep"] for name in str(item).split(",") if name.strip()]
    if "milestones" in values:
        try:
            values["milestones"] = [float(x) for x in str(values["milestones"]).split(",") if x.strip()]
        except ValueError as exc:
            raise click.BadParameter("give fractions like 0.5,0.75", param_hint="--milestones") from exc
    return values


@click.command("train", cls=KindOptionsCommand, epilog="Example: edgedistill train --epochs 30 --kind depthwise --out runs/dw")
@click.option("--config", "-c", "config_file", type=click.Path(dir_okay=False), help="YAML/TOML file of settings (flags override it).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out from its last completed epoch.")
@_with_train_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@json_option
@friendly_errors
def train_command(config_file: str | None, resume: bool, quiet: bool, as_json: bool, **params: Any) -> None:
    """Train a standard-conv teacher's cheap-conv student(s) by online distillation.

    With no options: ResNet-20 on Fashion-MNIST (offline), four shift-conv students and
    their online teacher (the paper's OD), 2 epochs, about 8 minutes on a 2-core CPU. The run directory gets the
    config, per-epoch metrics, and the best and last checkpoints of student and teacher.
    Works the same on one process or under torchrun (DDP).
    """
    from edgedistill.config import TrainConfig, read_config_file
    from edgedistill.distill.progress import RichEpochReporter
    from edgedistill.training import load_resume_config, train

    values = read_config_file(config_file) if config_file else {}
    flags = _overrides(params)
    if resume and params.get("out"):
        values = {**load_resume_config(params["out"]), **values}
    cfg = TrainConfig.from_dict({**values, **flags}, source=config_file or "flags")
    if config_file and not resume and "out" not in flags:
        _repeat_elsewhere(cfg, config_file)
    if quiet or as_json:
        summary = train(cfg, None, resume=resume)
    else:
        with RichEpochReporter(cfg.epochs) as reporter:
            summary = train(cfg, reporter, resume=resume)
    if summary is None:  # another DDP process: rank 0 reports
        return
    if as_json:
        print_json(summary.to_dict())
        return
    render_train_summary(summary)


def _repeat_elsewhere(cfg: Any, config_file: str) -> None:
    """``--config RUN/config.yaml`` repeats that run: its saved ``out`` already holds it, so the repeat
    goes to a fresh default run directory (and says so) instead of failing on the existing run."""
    from edgedistill.training import default_run_dir, holds_run

    if cfg.out is None or not holds_run(cfg.out):
        return
    cfg.validate()  # a bad setting is the one error, not preceded by this note
    taken = cfg.out
    cfg.out = str(default_run_dir(cfg))
    finished = (Path(taken) / "summary.json").is_file()
    also = "" if finished else f"; to continue that unfinished run instead: edgedistill train --resume --out {taken}"
    err_console.print(
        escape(f"note: {taken} (the out of {config_file}) already holds a run, so this one goes to {cfg.out}; "
               f"pass --out to choose{also}"),
        highlight=False, soft_wrap=True,
    )


def render_train_summary(summary: TrainSummary) -> None:
    rows = [
        (escape(n.name), escape(n.role), escape(n.model), si(n.params), si(n.macs), pct(n.val_top1), n.best_epoch + 1 if n.best_epoch is not None else None, pct(n.test_top1))
        for n in summary.networks
    ]
    out_console.print(table(
        escape(f"{summary.method} on {summary.dataset}: {summary.epochs} epochs in {summary.seconds:.0f} s "
               f"({summary.images_per_s:.0f} img/s, {summary.device})"),
        ["network", "role", "model", "params", "MACs", f"best {summary.selected_on.split()[0]} top-1", "epoch", "test top-1"],
        rows,
        caption=escape(f"run directory: {summary.run_dir}"),
    ))
    if summary.selected_student:
        err_console.print(escape(f"deployable student: {summary.run_dir}/student-best.pt  "
                                 f"(next: edgedistill export {summary.run_dir} --target host)"), highlight=False)


COMMANDS = [train_command]
