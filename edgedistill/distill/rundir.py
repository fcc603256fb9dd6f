"""The run directory: what a training run writes, and where.

```
RUN_DIR/
  config.yaml                      the resolved configuration (re-runnable with --config)
  metrics.jsonl, metrics.csv       one record per epoch (TensorBoard events too, if installed)
  summary.json                     final table: every network's params, MACs, val/test top-1
  student-best.pt, student-last.pt the selected cheap student (best on validation), deployable
  teacher-best.pt, teacher-last.pt the standard-conv teacher, when the method has one
  online-teacher-best.pt, ...-last.pt   OD's online teacher (m students + head)
  checkpoints/train-state.pt       everything --resume needs (written atomically every epoch)
  checkpoints/<network>-best.pt    each network's best weights so far
```
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from edgedistill.utils.atomic import write_text_atomic


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tensorboard: Any = None

    config = property(lambda self: self.path / "config.yaml")
    metrics_jsonl = property(lambda self: self.path / "metrics.jsonl")
    metrics_csv = property(lambda self: self.path / "metrics.csv")
    summary = property(lambda self: self.path / "summary.json")
    train_state = property(lambda self: self.path / "checkpoints" / "train-state.pt")

    def network_best(self, network: str) -> Path:
        return self.path / "checkpoints" / f"{network}-best.pt"

    def deployable(self, role: str, which: str) -> Path:
        return self.path / f"{role}-{which}.pt"

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Rewrite both metric files (atomically) from the full list of epoch records."""
        write_text_atomic(self.metrics_jsonl, "".join(json.dumps(r) + "\n" for r in records))
        rows = [_flatten(r) for r in records]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.metrics_csv, buffer.getvalue())
        self._log_tensorboard(rows[-1] if rows else {})

    def _log_tensorboard(self, row: dict[str, Any]) -> None:
        """Also write TensorBoard events (``RUN_DIR/tensorboard``) when tensorboard is installed."""
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._tensorboard = False
                return
            self._tensorboard = SummaryWriter(str(self.path / "tensorboard"))
        if self._tensorboard and "epoch" in row:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(key, value, row["epoch"])
            self._tensorboard.flush()


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat
