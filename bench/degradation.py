"""The degradation problem (He et al. 2016, §4.2 / Fig. 6) on the default data set.

Trains resnet20, resnet56 and their ``-noshort`` twins under ONE recipe (the ``TrainSpec``
defaults: SGD 0.1, momentum 0.9, weight decay 5e-4, cosine schedule, batch 128) and prints the
final *training* loss (eval mode, whole training split) and test accuracy. The expected
picture is plain-56 worse than plain-20 while resnet56 is not; the recipe is fixed in advance
and not tuned to produce it.

    python -m bench.degradation [--epochs 20] [--seeds 0 1 2] [--out-dir cache/degradation]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from landscape.specs import DataSpec, TrainSpec
from landscape.train import train_model

MODELS = ("resnet20", "resnet56", "resnet20-noshort", "resnet56-noshort")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out-dir", type=Path, default=Path("cache/degradation"))
    args = parser.parse_args(argv)

    rows = []
    for model in MODELS:
        results = []
        for seed in args.seeds:
            spec = TrainSpec(
                model=model,
                data=DataSpec(name=args.dataset),
                epochs=args.epochs,
                seed=seed,
                device=args.device,
            )
            out = args.out_dir / f"{model}-e{args.epochs}-s{seed}.pt"
            out.unlink(missing_ok=True)
            metadata = train_model(spec, out)
            results.append(metadata)
            print(
                f"  {model} seed {seed}: train loss {metadata['train_loss']:.5f}, "
                f"test acc {metadata['test_acc']:.4f}, {metadata['wall_time_s']:.1f} s",
                flush=True,
            )
        rows.append((model, results))

    print(
        f"\nrecipe: {args.dataset}, {args.epochs} epochs, SGD lr 0.1 momentum 0.9 wd 5e-4, "
        f"cosine, batch 128, seeds {args.seeds}"
    )
    print(f"{'model':<18} {'train loss':>12} {'train acc':>10} {'test acc':>10} {'time s':>8}")
    for model, results in rows:
        loss, train_acc, test_acc, seconds = (
            statistics.fmean(r[key] for r in results)
            for key in ("train_loss", "train_acc", "test_acc", "wall_time_s")
        )
        print(f"{model:<18} {loss:>12.5f} {train_acc:>10.4f} {test_acc:>10.4f} {seconds:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
