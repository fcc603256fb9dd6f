"""What export measures the artifacts' top-1 on, and the measuring itself, for one bundle.

:mod:`edgedistill.export.accuracy` has the pieces (the run's test split, top-1 over it, the
seeded device subset, drop flags); this module is the bundle's use of them: settle the split
before anything is written, ship the device subset into the bundle, and measure each model's
artifacts as they are made, with the notes a bundle's summary shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deploy.manifest import sha256_file
from edgedistill.backends import LocalArtifact
from edgedistill.errors import DataError
from edgedistill.export import accuracy

if TYPE_CHECKING:
    from edgedistill.export.pipeline import ExportOptions, Report
    from edgedistill.export.sources import ModelSource

DEVICE_SUBSET_SEED = 0


@dataclass
class ArtifactEvaluation:
    split: accuracy.TestSplit | None
    """The test images every artifact's top-1 is measured on (None: not measured)."""
    manifest: dict[str, Any]
    """The manifest's ``evaluation`` entry (what was measured on, or why nothing was)."""
    full_split: accuracy.TestSplit | None = None
    """The run's whole test split: the device subset is drawn from it."""
    device_subset: tuple[np.ndarray, np.ndarray] | None = None
    """The test images (uint8, fitted) and labels shipped for ``deploy.run eval``; measured here too."""

    @classmethod
    def settle(cls, sources: dict[str, ModelSource], options: ExportOptions, report: Report) -> ArtifactEvaluation:
        """The test split of the first trained network's run (``--eval-limit`` images of it), or why none."""
        trained = [s for s in sources.values() if s.trained]
        if options.eval_limit == 0:
            return cls(None, {"measured": False, "why": "--eval-limit 0"})
        if not trained:
            return cls(None, {"measured": False, "why": "no trained network in the bundle"})
        checkpoint = trained[0].checkpoint
        try:
            full = accuracy.run_test_split(checkpoint, options.data_dir, None)
            split = full if options.eval_limit is None else accuracy.run_test_split(checkpoint, options.data_dir,
                                                                                    options.eval_limit)
        except DataError as exc:
            report(f"warning: the artifacts' accuracy is not measured: {exc.message}")
            return cls(None, {"measured": False, "why": exc.message})
        return cls(split, {"measured": True, "split": split.description, "images": len(split.dataset),
                           "measured_on": accuracy.measured_on()}, full)

    def ship_device_subset(self, root: Path, count: int) -> dict[str, Any] | None:
        """Write the seeded test subset ``deploy.run eval`` measures on the device into the bundle at
        ``root``; returns the manifest's ``device_eval`` entry (None: nothing to ship)."""
        from deploy.evaluate import IMAGES, LABELS

        if self.full_split is None or not count:
            return None
        images, labels = accuracy.device_subset(self.full_split, count, DEVICE_SUBSET_SEED)
        (root / IMAGES).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / IMAGES, images)
        np.save(root / LABELS, labels)
        self.device_subset = (images, labels)
        return {"images": IMAGES, "labels": LABELS, "count": int(len(labels)), "seed": DEVICE_SUBSET_SEED,
                "split": f"a seeded subset of {self.full_split.description}", "measured_on": self.manifest["measured_on"],
                "sha256": {IMAGES: sha256_file(root / IMAGES), LABELS: sha256_file(root / LABELS)}}

    def measure(self, root: Path, source: ModelSource, local: list[LocalArtifact], options: ExportOptions,
                report: Report, notes: list[str]) -> dict[str, dict[str, Any]]:
        """Top-1 of every artifact of this model that runs here (the fp32 ONNX first), keyed by its path
        in the bundle; quantized ones are flagged (appended to ``notes``) when they lose too much."""
        split = self.split
        if split is None or not source.trained:
            return {}
        from deploy.backends import open_runner
        from deploy.env import usable_cores
        from deploy.evaluate import subset_top1

        role, threads = source.role, usable_cores()
        runs, raw, kinds = {}, {}, {}
        for artifact in local:
            relative = artifact.path.relative_to(root).as_posix()
            batch = None if options.dynamic_batch and artifact.path.suffix == ".onnx" else options.batch
            raw[relative] = open_runner(artifact.backend, artifact.path, threads).run
            runs[relative] = accuracy.fixed_batch(raw[relative], batch)
            kinds[relative] = {"backend": artifact.backend, "precision": artifact.precision}
        report(f"{role}: measuring the top-1 of {len(runs)} artifact(s) on {split.description}")
        where = accuracy.measured_on()
        entries = {path: {**kinds[path], **figures, "split": split.description, "measured_on": where, "by": "edgedistill export"}
                   for path, figures in accuracy.top1(runs, split).items()}
        if self.device_subset is not None:  # the same images and code as 'deploy.run eval' on the device
            images, labels = self.device_subset
            data = source.checkpoint.data
            for path, run in raw.items():
                entries[path]["device_subset_top1"] = subset_top1(run, images, labels, data["mean"], data["std"],
                                                                  options.batch)["test_top1"]
        reference = next(iter(entries))  # the fp32 ONNX
        checkpoint_top1 = source.checkpoint.metrics.get("test_top1")
        if checkpoint_top1 is not None:
            delta = 100 * (entries[reference]["test_top1"] - checkpoint_top1)
            entries[reference]["vs_checkpoint_pt"] = round(delta, 4)
            same_run = split.run_dir == str(Path(source.checkpoint.source).resolve().parent)
            if split.runs_split and same_run and abs(delta) > 0.05:
                notes.append(f"{role}: the fp32 ONNX scores {delta:+.2f} pt against the checkpoint's test top-1 "
                                  "on the same images: the evaluation path or the export differs from training")
        notes += [f"{role}: flagged: {flag}" for flag in accuracy.drop_flags(entries, reference, options.max_accuracy_drop)]
        return entries
