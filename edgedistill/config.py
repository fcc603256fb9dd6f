"""The training configuration: defaults, config files, and CLI overrides.

Precedence: built-in defaults < config file (YAML or TOML) < command-line flags.
The resolved configuration is written to ``RUN_DIR/config.yaml`` so every run
can be repeated with ``edgedistill train --config RUN_DIR/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edgedistill.errors import EdgeDistillError
from edgedistill.utils.names import unknown_name

if TYPE_CHECKING:
    from edgedistill.cheap.kinds import CheapSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass
class TrainConfig:
    # what to train
    model: str = "resnet20"
    kind: str = "shift"
    kind_options: dict[str, Any] = field(default_factory=dict)
    """The cheap kind's options that were set (``groups`` of ``group``). Each kind declares its own
    (edgedistill.cheap.kinds); in a config file and on the command line they are top-level
    settings (``groups: 8``, ``--groups 8``)."""
    keep: list[str] = field(default_factory=list)
    """Convs (names as in ``model.named_modules()``) the student keeps standard, besides the stem."""
    method: str = "od"
    students: int = 4
    network: str = "student"
    teacher_checkpoint: str | None = None
    temperature: float = 4.0
    kl_weight: float = 1.0
    # data
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    val_size: float = 0.1
    limit: int | None = None
    image_size: int | None = None
    hflip: bool | None = None
    # optimisation (the paper's schedule, scaled to --epochs)
    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    schedule: str = "multistep"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1
    seed: int = 0
    # where and how
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    threads: int | None = None
    out: str | None = None

    def validate(self) -> TrainConfig:
        """One clear error for the first nonsensical setting, before any data is read or file written."""
        see = "see 'edgedistill train --help'"
        numbers = {"lr": self.lr, "momentum": self.momentum, "weight-decay": self.weight_decay, "gamma": self.gamma,
                   "temperature": self.temperature, "kl-weight": self.kl_weight, "val-size": self.val_size}
        for name, value in numbers.items():
            if not math.isfinite(value):
                raise EdgeDistillError(f"invalid configuration: --{name} must be a finite number, got {value}", see)
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1", "e.g. --epochs 2 (the paper trains 300)"),
            (self.batch_size >= 1, "--batch-size must be at least 1", "e.g. --batch-size 128 (the paper's)"),
            (self.lr > 0, "--lr must be positive", "e.g. --lr 0.1 (the paper's)"),
            (self.momentum >= 0, "--momentum must be ≥ 0", "e.g. --momentum 0.9 (the paper's); 0 for plain SGD"),
            (self.weight_decay >= 0, "--weight-decay must be ≥ 0", "e.g. --weight-decay 2e-4 (the paper's); 0 for none"),
            (self.gamma > 0, "--gamma must be positive", "the multistep decay factor, e.g. --gamma 0.1"),
            (self.temperature > 0, "--temperature must be positive", "e.g. --temperature 4 (the paper's)"),
            (self.kl_weight >= 0, "--kl-weight must be ≥ 0", "e.g. --kl-weight 1; 0 switches distillation off"),
            (self.students >= 1, "--students must be at least 1", "e.g. --students 4 (the paper's m)"),
            (self.val_size >= 0 and (self.val_size < 1 or self.val_size == int(self.val_size)),
             "--val-size is a count (a whole number) or a fraction below 1", "e.g. --val-size 0.1, or 0 for no validation split"),
            (self.limit is None or self.limit >= 1, "--limit must be at least 1 image", "leave it out to use every image"),
            (self.image_size is None or self.image_size >= 1, "--image-size must be at least 1 pixel",
             "leave it out to use the dataset's size (e.g. 32)"),
            (self.threads is None or self.threads >= 1, "--threads must be at least 1",
             "leave it out to let torch choose, or e.g. --threads 2"),
            (0 <= self.seed < 2**32, "--seed must be between 0 and 2^32 - 1", "e.g. --seed 0"),
            (self.schedule in ("multistep", "cosine", "constant"), "--schedule is multistep, cosine or constant", see),
            (all(0 < m < 1 for m in self.milestones), "milestones are fractions of the run, between 0 and 1",
             "e.g. --milestones 0.5,0.75"),
            (self.method != "kd" or self.teacher_checkpoint is not None,
             "--method kd needs --teacher-checkpoint (a run of '--method alone --network teacher')",
             "train a teacher first: edgedistill train --method alone --network teacher"),
        ]
        for ok, message, hint in checks:
            if not ok:
                raise EdgeDistillError(f"invalid configuration: {message}", hint)
        from edgedistill.cheap import get_kind
        from edgedistill.distill.methods import METHODS
        from edgedistill.distill.runtime import check_device_name
        from edgedistill.models import model_names

        trainable = [name for name in model_names() if name not in UNTRAINABLE_MODELS]
        if self.model not in trainable:
            error = unknown_name("model", self.model, trainable)
            if self.model in UNTRAINABLE_MODELS:
                error.hint = (f"'{self.model}' is built by --method od around its students, not a --model; "
                              f"give the students' architecture, e.g. --model resnet20 --method od")
            raise error
        get_kind(self.kind)  # unknown name: "did you mean"
        try:
            self.cheap_spec()
        except EdgeDistillError as exc:  # a kind option out of range, or one only another kind takes
            raise EdgeDistillError(f"invalid configuration: {exc.message}", exc.hint) from None
        METHODS.get(self.method)  # unknown name: "did you mean"
        from edgedistill.data import dataset_names

        if self.dataset not in dataset_names():
            raise unknown_name("dataset", self.dataset, dataset_names())
        check_device_name(self.device)
        return self

    @property
    def val_split(self) -> int | float:
        """``val_size`` as load_dataset wants it: a count (≥ 1) or a fraction (< 1)."""
        return self.val_size if 0 < self.val_size < 1 else int(self.val_size)

    def cheap_spec(self) -> CheapSpec:
        """The student's cheap conv: the kind, the options of it that were set, the kept convs."""
        from edgedistill.cheap.kinds import spec_from_settings

        return spec_from_settings(self.kind, self.kind_options, self.keep)

    def to_dict(self) -> dict[str, Any]:
        """Flat settings, as a config file has them: the kind's options (defaults filled in) after ``kind``."""
        from edgedistill.cheap.kinds import CHEAP_KIND_REGISTRY

        data = dataclasses.asdict(self)
        given = data.pop("kind_options")
        kind = CHEAP_KIND_REGISTRY.get(self.kind, None)
        options = {o.name: given.get(o.name, o.default) for o in kind.options} if kind else given
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat[key] = value
            if key == "kind":
                flat.update(options)
        return flat

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        from edgedistill.cheap.kinds import kind_options

        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "kind_options"}
        options = kind_options()
        settings: dict[str, Any] = {"kind_options": {}}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name in options:
                where = None if source == "flags" else f"setting '{key}' in {source}"
                settings["kind_options"][name] = options[name][0].converted(value, where)  # checked in validate()
            elif name in fields:
                settings[name] = _coerce(name, value, str(fields[name].type), source)
            else:
                raise unknown_name(f"setting in {source}", key, [*fields, *options])
        return cls(**settings)


UNTRAINABLE_MODELS = ("online-teacher",)
"""Registered so that checkpoints rebuild, but made by a method, not trainable as ``--model``."""


def _coerce(name: str, value: Any, annotation: str, source: str) -> Any:
    """``value`` as the setting's declared type (``int``, ``float | None``, ...), or one clear error."""
    if value is None:
        return None
    convert, expected = _CONVERTERS[annotation.replace(" | None", "")]
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise EdgeDistillError(f"setting '{name}' in {source} must be {expected}, got {value!r}") from None


def _whole(value: Any) -> int:
    if isinstance(value, bool) or float(value) != int(float(value)):
        raise ValueError(value)
    return int(float(value))


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(value)


_CONVERTERS: dict[str, tuple[Any, str]] = {
    "int": (_whole, "a whole number"),
    "float": (float, "a number"),
    "bool": (_boolean, "true or false"),
    "str": (str, "text"),
    "list[float]": (lambda v: [float(x) for x in v], "a list of numbers"),
    "list[str]": (lambda v: [v] if isinstance(v, str) else [str(x) for x in v], "a list of names"),
}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a ``.yaml``/``.yml`` or ``.toml`` file (flat, or under a ``train`` table)."""
    path = Path(path)
    if not path.is_file():
        raise EdgeDistillError(f"config file not found: {path}", "check the path given to --config")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise EdgeDistillError(f"cannot parse config file {path}: {exc}", "fix the syntax") from exc
    data = data or {}
    if not isinstance(data, dict):
        raise EdgeDistillError(f"config file {path} must hold a mapping of settings", "e.g. 'epochs: 30'")
    return data.get("train", data)


def config_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
