"""The head's input on MobileNetV2: global average pooling (``avg``) against the thesis's
flattened last block (``flatten``), on the default study's data.

    .venv/bin/python benchmarks/thesis/head_input.py        # ~5 min on 2 cores

One forward pass of the frozen ImageNet base (torchvision's weights, ``data/pretrained``) over
the default preset's training and validation rows (``params/wbc.yaml``: size, images per
class) and a class-balanced sample of TEST, unpooled; ``avg`` is its spatial mean and
``flatten`` its reshape, so both heads see the same pass. Each trains the ``imagenet``
regime's head (``params/regimes/imagenet.yaml``) with the same seed; printed: validation,
TEST-sample and TEST_SIMPLE accuracy, features per image, head parameters, seconds per epoch,
and the machine, and written to ``reports/ablation/head_input.csv``, which ``make results``
puts in docs/experiments/thesis.md. Uses the manifest of the last ``dvc repro``
(``build/manifests``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
OUT = Path("reports/ablation/head_input.csv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path,
                        default=Path("build/manifests/blood-cell-images.csv"))
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args(argv)

    import os

    os.chdir(ROOT)
    from leuko.core import splits
    from leuko.core.datasets import WBC_CLASSES
    from leuko.core.inputs import load_resized
    from leuko.core.machine import machine_line
    from leuko.models import networks, train
    from leuko.thesis import study

    settings = study.WbcSettings.from_params()
    regime = study.RegimeSettings.from_params("imagenet")
    size = study.resolve_image_size("mobilenet_v2", settings.image_size)
    manifest = study.read_manifest(args.manifest)
    train_rows, val_rows = study.training_rows(manifest, settings.train_per_class,
                                               settings.val_per_class, settings.seed)
    parts = {"train": train_rows, "val": val_rows,
             "test sample": splits.balanced_subsample(manifest[manifest["split"] == "test"],
                                                      args.test_per_class, settings.seed),
             "test_simple": manifest[manifest["split"] == "test_simple"]}
    train.set_determinism(settings.seed)
    base = networks.build_base("mobilenet_v2", (size, size, 3), True, "flatten")
    unpooled = base.get_layer(index=-2).output  # the block before Flatten
    block = networks.keras.Model(base.input, unpooled)
    preprocess = networks.Preprocess("torch")
    maps = {name: train.compute_features(block, preprocess,
                                         load_resized(list(rows["path"]), size, progress=False))
            for name, rows in parts.items()}
    labels = {name: study.one_hot_labels(rows["label"].to_numpy(), list(WBC_CLASSES))
              for name, rows in parts.items()}
    rows = []
    for bottleneck in ("avg", "flatten"):
        inputs = {name: (m.mean(axis=(1, 2)) if bottleneck == "avg" else m.reshape(len(m), -1))
                  for name, m in maps.items()}
        train.set_determinism(settings.seed)
        head = networks.build_head(inputs["train"].shape[1], len(WBC_CLASSES),
                                   regime.head_config())
        config = regime.fit_config(settings.seed)
        train.compile_model(head, config)
        start = time.perf_counter()
        head.fit(inputs["train"], labels["train"], batch_size=regime.batch_size,
                 epochs=regime.epochs, shuffle=True, verbose=0)
        seconds = (time.perf_counter() - start) / regime.epochs
        row = {"bottleneck": bottleneck, "features per image": inputs["train"].shape[1],
               "head parameters": networks.count_params(head)["total"],
               "s per epoch": round(seconds, 3)}
        for name in ("val", "test sample", "test_simple"):
            predicted = head.predict(inputs[name], verbose=0).argmax(axis=1)
            row[f"{name} accuracy %"] = round(
                100 * float((predicted == labels[name].argmax(axis=1)).mean()), 1)
        rows.append(row)
    print(f"MobileNetV2 at {size} px, frozen ImageNet base, imagenet head "
          f"({regime.epochs} epochs, batch {regime.batch_size}, seed {settings.seed}); "
          f"{len(train_rows)} train / {len(val_rows)} val / {len(parts['test sample'])} TEST "
          f"/ {len(parts['test_simple'])} TEST_SIMPLE images")
    table = pd.DataFrame(rows).assign(
        image_size=size, epochs=regime.epochs, seed=settings.seed, machine=machine_line())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, index=False)
    print(table.to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
