"""Child process: peak memory of one PyTorch eager model (``python -m edgedistill.bench.torch_probe``).

torch itself is imported before the baseline, so the figure is the model's
cost (weights, activations, allocator caches), as for the other backends.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--lowering", default="trained", help="form of the cheap layers (edgedistill export --lowering)")
    parser.add_argument("--shape", required=True, help="input shape, e.g. 1,1,32,32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)

    import torch

    from deploy.memory_probe import measure_peak
    from edgedistill.checkpoints import load_model_checkpoint
    from edgedistill.export.lowering import lower

    torch.set_num_threads(args.threads)
    x = torch.randn(tuple(int(d) for d in args.shape.split(",")))

    def work() -> None:
        model = lower(load_model_checkpoint(args.checkpoint).build(), args.lowering)[0]
        with torch.inference_mode():
            for _ in range(args.runs):
                model(x)

    result = {"backend": "pytorch", "runs": args.runs, "threads": args.threads, **measure_peak(work)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
