"""The ``edgedistill`` command line. Commands only parse, call and print; the work lives elsewhere."""

from __future__ import annotations

import click

from edgedistill import __version__
from edgedistill.commands.common import FriendlyGroup

@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgedistill")
def main() -> None:
    """Train cheap-convolution students by online distillation, export them for an edge
    target, and benchmark student against teacher on the device.

    \b
    The three stages:
      edgedistill train                         # Fashion-MNIST, ResNet-20, 4 shift students (OD)
      edgedistill export RUN_DIR --target host  # ONNX + parity check (+ TVM with --backend tvm) -> bundle
      edgedistill bench BUNDLE                  # latency and memory, student vs teacher
    """


def _register_commands() -> None:
    from edgedistill.commands import bench_cmd, demo_cmd, doctor_cmd, eval_cmd, export_cmd, info_cmd, probe_cmd, train_cmd

    for module in (probe_cmd, demo_cmd, train_cmd, eval_cmd, export_cmd, bench_cmd, info_cmd, doctor_cmd):
        for command in module.COMMANDS:
            main.add_command(command)


_register_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
