"""Presets: ``python -m leuko.pipeline.presets full`` (or ``make preset-full``) copies the files of
``params/presets/full/`` over ``params/``; ``default`` restores the committed CPU study.
DVC then sees the changed values (``dvc status``, ``dvc params diff``).

A switch also drops from ``dvc.lock`` the stages the pipeline no longer has
(:func:`prune_lock`): DVC keeps them (treeverse/dvc#5293), and every ``dvc repro`` parses
them. Switching back reruns none whose inputs are unchanged: DVC's run-cache restores them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from leuko.core.atomic import atomic_write
from leuko.models.networks import get_network, keras_cache_dir

PARAMS = Path("params")
PRESETS = PARAMS / "presets"


def available(presets: Path = PRESETS) -> list[str]:
    """Names of the presets (folders under ``params/presets``)."""
    return sorted(p.name for p in presets.iterdir() if p.is_dir())


def preset_files(name: str, presets: Path = PRESETS) -> list[Path]:
    """The parameter files a preset sets, relative to its folder."""
    folder = presets / name
    if not folder.is_dir():
        raise ValueError(f"preset must be one of {available(presets)}, got {name!r}")
    return sorted(p.relative_to(folder) for p in folder.rglob("*.yaml"))


def apply_preset(name: str, params: Path = PARAMS, presets: Path = PRESETS) -> list[Path]:
    """Copy a preset's files over ``params/``; returns the files written."""
    written = []
    for relative in preset_files(name, presets):
        target = params / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(presets / name / relative, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m leuko.pipeline.presets NAME``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m leuko.pipeline.presets {{{','.join(available())}}}", file=sys.stderr)
        return 1
    try:
        written = apply_preset(argv[0])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"preset {argv[0]}: wrote " + ", ".join(str(p) for p in written))
    names = stage_names()
    dropped = prune_lock(current=names)
    if dropped:
        print(f"dvc.lock: dropped the {len(dropped)} stages this preset does not have (DVC's "
              "run-cache restores their outputs if you switch back with nothing changed)")
    print(f"the pipeline now has {len(names)} stages; `dvc status` lists those whose "
          "parameters changed, `dvc repro` runs them.")
    missing = missing_weights()
    if missing:
        print("ImageNet weights this preset needs and the Keras cache lacks (downloaded on first "
              "use; offline, place these files there by hand):")
        for network, path in missing:
            print(f"  {network}: {path}")
    return 0


def stage_names(root: Path = Path(".")) -> list[str]:
    """The stages ``root/dvc.yaml`` expands to with the current parameters."""

    out = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
                         capture_output=True, text=True, check=True, cwd=Path(root)).stdout
    return out.split()


def prune_lock(root: Path = Path("."), current: list[str] | None = None) -> list[str]:
    """Drop from ``root/dvc.lock`` every stage ``dvc.yaml`` no longer expands to (``current``,
    if :func:`stage_names` was already asked), the others left byte for byte as DVC wrote
    them; returns the names dropped."""

    from ruamel.yaml import YAML  # DVC's own YAML library, as DVC writes dvc.lock

    lock = Path(root) / "dvc.lock"
    if not lock.is_file():
        return []
    rt = YAML()
    rt.default_flow_style = False
    data = rt.load(lock.read_text())
    keep = set(stage_names(root) if current is None else current)
    dropped = [name for name in data.get("stages", {}) if name not in keep]
    if dropped:
        for name in dropped:
            del data["stages"][name]
        with atomic_write(lock) as tmp, open(tmp, "w") as f:
            rt.dump(data, f)
    return dropped


def missing_weights(wbc_yaml: Path = PARAMS / "wbc.yaml") -> list[tuple[str, Path]]:
    """(network, cache path) of every ImageNet weights file ``wbc.networks`` needs that is not
    in the Keras cache (MobileNetV2's come with the data); none with ``wbc.weights: random``
    (the smoke preset's plumbing run)."""


    wbc = (yaml.safe_load(Path(wbc_yaml).read_text()) or {})["wbc"]
    networks = wbc["networks"]
    if wbc["weights"] == "random":
        return []
    out = []
    for name in networks:
        entry = get_network(name)
        if entry.weights_file and not (keras_cache_dir() / entry.weights_file).is_file():
            out.append((name, keras_cache_dir() / entry.weights_file))
    return out


if __name__ == "__main__":
    sys.exit(main())
