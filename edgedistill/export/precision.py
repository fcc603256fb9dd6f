"""The precision a bundle is exported at, and the real training images int8 is calibrated on.

Both are settled before any network is exported, so that a precision the backend cannot run, an
int8-only option given for fp32, or a dataset too small to calibrate on ends the command with one
clear line and nothing written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploy.backends.base import PRECISIONS
from edgedistill.backends import HOST_BACKENDS, HostBackend, get_backend
from edgedistill.errors import DataError, EdgeDistillError
from edgedistill.export.samples import Samples

if TYPE_CHECKING:
    from edgedistill.export.pipeline import ExportOptions
    from edgedistill.export.targets import Target

DEFAULT_CALIBRATION_METHOD = "minmax"


def choose_precision(options: ExportOptions, target: Target, backend: HostBackend) -> str:
    """The bundle's precision: --precision when the backend offers it, else the backend's default for
    the target. Also refuses the int8-only options for other precisions and a too small calibration set."""
    from edgedistill.export.quantize import CALIBRATION_METHODS, MIN_CALIBRATION_SAMPLES

    precision = options.precision or backend.precision(target)
    if precision not in PRECISIONS:
        raise EdgeDistillError(f"unknown precision {precision!r}", f"use one of: {', '.join(PRECISIONS)}")
    if not backend.offers(precision, target):
        offered = backend.offered_precisions(target)
        why = backend.refuses_precision(precision, target) or f"it exports {', '.join(offered)} only"
        others = [name for name in target.backends if name != backend.name and get_backend(name).offers(precision, target)]
        hint = f"use --precision {' or '.join(offered)}"
        if others:
            hint += f", or --backend {others[0]} for {precision}"
        else:
            elsewhere = [b.name for b in HOST_BACKENDS.values() if precision in b.precisions]
            if elsewhere:
                hint += f"; {precision} is offered by the {' and '.join(elsewhere)} backend{'s' if len(elsewhere) > 1 else ''} " \
                        "on a target that has it (see edgedistill targets)"
        raise EdgeDistillError(f"--precision {precision} is not available with the {backend.name} backend "
                               f"for target {target.name}: {why}", hint)
    if options.calibration_method not in CALIBRATION_METHODS:
        raise EdgeDistillError(f"unknown --calibration-method {options.calibration_method!r}",
                               f"use one of: {', '.join(CALIBRATION_METHODS)}")
    if precision != "int8" and options.calibration_method != DEFAULT_CALIBRATION_METHOD:
        raise EdgeDistillError(f"--calibration-method applies to --precision int8 only, not {precision}",
                               "drop it, or pass --precision int8")
    if precision == "int8" and options.calibration_samples < MIN_CALIBRATION_SAMPLES:
        raise EdgeDistillError(f"--calibration-samples {options.calibration_samples} is too few to calibrate int8",
                               f"use {MIN_CALIBRATION_SAMPLES} or more real training images (256 is the default)")
    return precision


def calibration_images(data: dict, options: ExportOptions) -> Samples:
    """The real training images int8 is calibrated on; refused when the dataset cannot give enough."""
    from edgedistill.export.quantize import MIN_CALIBRATION_SAMPLES, calibration_set

    images = calibration_set(data, options.calibration_samples, options.data_dir)
    if len(images.inputs) < MIN_CALIBRATION_SAMPLES:
        raise DataError(f"only {len(images.inputs)} training images of {data['name']} for the int8 calibration",
                        f"int8 needs {MIN_CALIBRATION_SAMPLES} or more: check --data-dir")
    if len(images.inputs) < options.calibration_samples:
        images = Samples(images.inputs, f"{images.source}: {len(images.inputs)} of the {options.calibration_samples} asked for")
    return images
