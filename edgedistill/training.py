"""``edgedistill train``: data, networks, the epoch loop, and the run directory's final contents.

This module wires the pieces together; the loop itself is
:class:`edgedistill.distill.trainer.Trainer` and the losses live in
:mod:`edgedistill.distill.methods`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from edgedistill.checkpoints import ModelCheckpoint, load_model_checkpoint, load_training_state, save_model_checkpoint
from edgedistill.config import TrainConfig, config_yaml
from edgedistill.data import BatchLoader, BatchTransform, DataSplits, ImageDataset, load_dataset
from edgedistill.distill.build import build_method, student_spec_for
from edgedistill.distill.methods import Method
from edgedistill.distill.rundir import RunDir
from edgedistill.distill.runtime import Runtime, training_runtime
from edgedistill.distill.trainer import BestTracker, EpochReporter, Trainer, epoch_seed, top1
from edgedistill.errors import CheckpointError, EdgeDistillError, Interrupted
from edgedistill.models import complexity
from edgedistill.utils.atomic import save_with, write_json_atomic, write_text_atomic

STATE_FORMAT = "edgedistill-train-state/1"


@dataclass
class NetworkResult:
    name: str
    role: str
    """``student`` (selected), ``student candidate``, ``teacher`` or ``online teacher``."""
    model: str
    params: int
    macs: int
    val_top1: float | None
    best_epoch: int | None
    test_top1: float | None


@dataclass
class TrainSummary:
    run_dir: str
    method: str
    dataset: str
    device: str
    epochs: int
    seconds: float
    images_per_s: float
    selected_student: str | None
    selected_on: str
    networks: list[NetworkResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSummary:
        """The summary a finished run saved (``RUN_DIR/summary.json``)."""
        networks = [NetworkResult(**n) for n in data.get("networks", [])]
        return cls(**{**data, "networks": networks})


def default_run_dir(cfg: TrainConfig) -> Path:
    """``runs/<time>-<method>-<model>-<kind>``, with a ``-2``, ``-3`` ... when that is taken."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{cfg.method}-{cfg.model}-{cfg.kind}"
    path, n = base, 1
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # every process must pick the same name
    while path.exists() and not distributed:
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def holds_run(path: str | Path) -> bool:
    """Whether ``path`` is (the start of) a training run: it has a config.yaml or a training state."""
    run = RunDir(path)
    return run.config.is_file() or run.train_state.exists()


def make_optimizer(cfg: TrainConfig, method: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in method.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    milestones = sorted({max(1, round(f * cfg.epochs)) for f in cfg.milestones})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.gamma)


class TrainingSession:
    """One run: owns the data, the method, the trainer and the run directory."""

    def __init__(self, cfg: TrainConfig, runtime: Runtime, run: RunDir, reporter: EpochReporter | None) -> None:
        self.cfg, self.runtime, self.run = cfg, runtime, run
        self.data: DataSplits = load_dataset(
            cfg.dataset, cfg.data_dir, val_size=cfg.val_split, seed=cfg.seed,
            download=cfg.download, limit=cfg.limit, image_size=cfg.image_size,
        )
        spec = self.data.spec
        torch.manual_seed(cfg.seed)  # network initialisation
        self.method: Method = build_method(
            cfg, student_spec_for(cfg, spec.num_classes, spec.in_channels), dataclasses.asdict(spec)
        )
        self.method.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
        model: nn.Module = self.method
        if runtime.distributed:
            ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            model = DistributedDataParallel(self.method, device_ids=ids)
        hflip = cfg.hflip if cfg.hflip is not None else spec.name != "digits"  # flipped digits are other glyphs
        train_tf = BatchTransform(spec, train=True, hflip=hflip)
        self.eval_tf = BatchTransform(spec, train=False)
        self.train_loader = self._loader(self.data.train, train_tf, shuffle=True, drop_last=True, even_shards=True)
        if len(self.train_loader) == 0:
            raise EdgeDistillError(
                f"{len(self.data.train)} training images make no full batch of {cfg.batch_size} per process",
                "use a smaller --batch-size, or a larger --limit",
            )
        optimizer = make_optimizer(cfg, self.method)
        self.trainer = Trainer(
            self.method, model, optimizer, make_scheduler(cfg, optimizer), runtime,
            self._train_batches, self._loader(self.data.val, self.eval_tf), reporter,
        )
        self.tracker = BestTracker()
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.epoch: int | None = None
        """The epoch running now (None before the first and after the last)."""

    def describe(self) -> str:
        """One line for the log: what is trained, on what data and device, and how long an epoch is."""
        specs = self.method.specs
        counts: dict[str, int] = {}
        for name, spec in specs.items():
            if spec.arch != "online-teacher":
                counts[spec.describe()] = counts.get(spec.describe(), 0) + 1
        networks = " + ".join(f"{n} × {d}" if n > 1 else d for d, n in counts.items())
        if "online-teacher" in specs:
            networks += " + their online teacher"
        data, cfg = self.data, self.cfg
        steps = len(self.train_loader)
        start = f", resuming at epoch {self.start_epoch + 1}" if self.start_epoch else ""
        return (
            f"training {cfg.method}: {networks} on {data.spec.name} ({len(data.train)} train / {len(data.val)} val images, "
            f"{data.spec.in_channels}×{data.spec.image_size}×{data.spec.image_size}), {self.runtime.device}"
            f"{f' × {self.runtime.world_size} processes' if self.runtime.distributed else ''}; "
            f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} of {steps} steps × {cfg.batch_size} images{start} "
            f"-> {self.run.path}"
        )

    def _loader(self, data: ImageDataset, transform: BatchTransform, **kwargs: Any) -> BatchLoader:
        defaults = {"shuffle": False, "drop_last": False, "even_shards": False}
        return BatchLoader(
            data, self.cfg.batch_size, transform, seed=self.cfg.seed, device=self.runtime.device,
            rank=self.runtime.rank, world_size=self.runtime.world_size, **{**defaults, **kwargs},
        )

    def _train_batches(self, epoch: int) -> BatchLoader:
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch))  # dropout and anything else drawing from the global RNG
        self.train_loader.set_epoch(epoch)
        return self.train_loader

    # -- checkpoints -----------------------------------------------------------------

    def _checkpoint(self, name: str, role: str, metrics: dict[str, Any]) -> ModelCheckpoint:
        return ModelCheckpoint(
            spec=self.method.specs[name],
            state_dict=self.method.network(name).state_dict(),
            data=dataclasses.asdict(self.data.spec),
            metrics=metrics,
            role=role,
            method=self.cfg.method,
        )

    def _save_state(self, epoch: int) -> None:
        state = {
            "format": STATE_FORMAT,
            "epoch": epoch,
            "config": self.cfg.to_dict(),
            "best": self.tracker.best,
            "history": self.history,
            **self.trainer.state_dict(),
        }
        save_with(self.run.train_state, lambda tmp: torch.save(state, tmp))

    def resume(self) -> None:
        """Continue after the last saved epoch (or from the start if the run died in its first epoch)."""
        if not self.run.train_state.is_file():
            if not self.run.config.is_file():
                raise EdgeDistillError(f"nothing to resume in {self.run.path}", "start a new run without --resume")
            return
        # The very command that failed cannot be the fix: say what to do instead.
        instead = (f"start a new run with another --out, or delete {self.run.train_state} yourself to restart "
                   f"this run from its first epoch (edgedistill train --resume --out {self.run.path})")
        try:
            state = load_training_state(self.run.train_state)
        except CheckpointError as exc:
            raise CheckpointError(exc.message.replace("checkpoint", "training state", 1), instead) from exc
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{self.run.train_state} is not an edgedistill training state", instead)
        # The LR schedule is laid out over --epochs, so a resumed run keeps its length.
        saved = {k: v for k, v in state["config"].items() if k not in ("out", "device", "threads")}
        current = {k: v for k, v in self.cfg.to_dict().items() if k in saved}
        changed = sorted(k for k in saved if saved[k] != current[k])
        if changed:
            raise EdgeDistillError(
                f"--resume with a different configuration ({', '.join(changed)})",
                f"resume with the run's own settings: edgedistill train --resume --out {self.run.path}",
            )
        self.trainer.load_state_dict(state)
        self.tracker.best = state["best"]
        self.start_epoch = state["epoch"] + 1
        self.history = state["history"]
        if self.runtime.is_main:
            self.run.write_metrics(self.history)  # drop records of an epoch that was cut short

    # -- the run -----------------------------------------------------------------------

    def fit(self) -> None:
        has_val = len(self.data.val) > 0
        for epoch in range(self.start_epoch, self.cfg.epochs):
            self.epoch = epoch
            lr = self.trainer.optimizer.param_groups[0]["lr"]
            record: dict[str, Any] = {"epoch": epoch, "lr": lr, **self.trainer.train_epoch(epoch)}
            record["val_top1"] = self.trainer.evaluate(self.trainer.val_batches) if has_val else {}
            improved = self.tracker.update(epoch, record["val_top1"] if has_val else record["train_top1"])
            if self.runtime.is_main:
                for name in improved:
                    metrics = {"val_top1": self.tracker.best[name]["top1"], "epoch": epoch}
                    save_model_checkpoint(self.run.network_best(name), self._checkpoint(name, name, metrics))
                self.history.append(record)
                self._save_state(epoch)  # the state first: metrics never run ahead of what --resume can restore
                self.run.write_metrics(self.history)
            self.trainer.reporter.end_epoch(record)
            self.runtime.barrier()
        self.epoch = None

    def finish(self, seconds: float) -> TrainSummary:
        """Select the student, test every network's best weights once, write the deployables."""
        best = self.tracker.best
        selected = max(self.method.student_names, key=lambda n: best[n]["top1"]) if self.method.student_names else None
        results = []
        test_batches = self._loader(self.data.test, self.eval_tf)
        input_shape = (1, self.data.spec.in_channels, self.data.spec.image_size, self.data.spec.image_size)
        for name in self.method.specs:
            role = self._role(name, selected)
            last = self._checkpoint(name, role, {"epoch": self.cfg.epochs - 1})
            best_ckpt = load_model_checkpoint(self.run.network_best(name))
            network = best_ckpt.build(self.runtime.device)
            test_top1 = self._test(network, test_batches)
            cost = complexity(network, input_shape)
            results.append(NetworkResult(
                name, role, self.method.specs[name].describe(), cost.params, cost.macs,
                best[name]["top1"], int(best[name]["epoch"]), test_top1,
            ))
            deploy_role = {"student": "student", "teacher": "teacher", "online teacher": "online-teacher"}.get(role)
            if deploy_role and self.runtime.is_main:
                best_ckpt.role = deploy_role
                best_ckpt.metrics = {**best_ckpt.metrics, "test_top1": test_top1, **cost.to_dict()}
                save_model_checkpoint(self.run.deployable(deploy_role, "best"), best_ckpt)
                save_model_checkpoint(self.run.deployable(deploy_role, "last"), last)
        images_per_s = [r["images_per_s"] for r in self.history]
        summary = TrainSummary(
            run_dir=str(self.run.path), method=self.cfg.method, dataset=self.cfg.dataset,
            device=str(self.runtime.device), epochs=self.cfg.epochs, seconds=seconds,
            images_per_s=sum(images_per_s) / len(images_per_s) if images_per_s else 0.0,
            selected_student=selected, selected_on="val" if len(self.data.val) else "train (no validation split)",
            networks=results,
        )
        if self.runtime.is_main:
            write_json_atomic(self.run.summary, summary.to_dict())
        return summary

    def _role(self, name: str, selected: str | None) -> str:
        if name == selected:
            return "student"
        if name in self.method.student_names:
            return "student candidate"
        assert name == self.method.teacher_name, name
        return "online teacher" if name == "online-teacher" else "teacher"

    def _test(self, network: nn.Module, batches: BatchLoader) -> float:
        return top1(lambda x: {"net": network(x)}, batches, self.runtime)["net"]


def load_resume_config(run_dir: str) -> dict[str, Any]:
    """The settings of the run in ``run_dir`` (its config.yaml), for ``--resume``."""
    from edgedistill.config import read_config_file

    path = RunDir(run_dir).config
    if not path.is_file():
        raise EdgeDistillError(f"nothing to resume in {run_dir}: no config.yaml", "check --out, or start a new run")
    return read_config_file(path)


def prepare_run_dir(cfg: TrainConfig, resume: bool) -> RunDir:
    if cfg.out is None:
        if resume:
            raise EdgeDistillError("--resume needs the run to continue", "pass --out RUN_DIR")
        cfg.out = str(default_run_dir(cfg))
    run = RunDir(cfg.out)
    if not resume and run.train_state.exists():
        raise EdgeDistillError(
            f"{run.path} already holds a training run",
            "continue it with --resume, or choose another --out",
        )
    return run


def check_networks(cfg: TrainConfig) -> None:
    """Build the student on the meta device (shapes only, milliseconds): a conv --kind cannot replace,
    a --groups that does not divide, an unknown --keep fail here, before any data is read."""
    from edgedistill.models import create_model

    if cfg.method == "alone" and cfg.network == "teacher":
        return
    with torch.device("meta"):
        create_model(student_spec_for(cfg, 10, 3))


def train(cfg: TrainConfig, reporter: EpochReporter | None = None, resume: bool = False) -> TrainSummary | None:
    """Run (or resume) a whole training run; return its summary (``None`` on DDP ranks other than 0).

    Ctrl-C raises :class:`~edgedistill.errors.Interrupted`, whose hint says how to continue."""
    cfg.validate()
    check_networks(cfg)
    run = prepare_run_dir(cfg, resume)
    session: TrainingSession | None = None
    testing = False
    try:
        with training_runtime(cfg.device, cfg.amp, cfg.channels_last, cfg.threads) as runtime:
            session = TrainingSession(cfg, runtime, run, reporter if runtime.is_main else None)
            if resume:
                session.resume()
            elif runtime.is_main:
                run.path.mkdir(parents=True, exist_ok=True)
                write_text_atomic(run.config, config_yaml(cfg))
            session.trainer.reporter.start_run(session.describe())
            start = time.perf_counter()
            session.fit()
            testing = True
            summary = session.finish(time.perf_counter() - start)
            return summary if runtime.is_main else None
    except KeyboardInterrupt:
        raise interrupted(run, session, testing) from None


def interrupted(run: RunDir, session: TrainingSession | None, testing: bool = False) -> Interrupted:
    """What Ctrl-C left behind, and the command that continues from there."""
    again = f"edgedistill train --resume --out {run.path}"
    if not run.config.is_file():
        return Interrupted("training interrupted before it started; nothing was written", "run the same command again")
    if session is None or session.epoch is None:
        where = "while testing the trained networks" if testing else "before an epoch began"
        return Interrupted(f"training interrupted {where}; every completed epoch of {run.path} is saved",
                           f"continue it with: {again}")
    epochs = session.cfg.epochs
    saved = session.epoch  # epochs 0 .. epoch-1 are complete
    done = f"epochs 1-{saved} are saved" if saved > 1 else ("epoch 1 is saved" if saved == 1 else "no epoch was complete yet")
    return Interrupted(f"training interrupted in epoch {session.epoch + 1}/{epochs} ({done} in {run.path})",
                       f"continue it with: {again}")
