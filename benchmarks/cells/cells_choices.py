"""One setting of the cell classifier changed against the study's own models: which carries
better to another lab?

    .venv/bin/python benchmarks/cells/cells_choices.py bn      # ~10 min on 2 cores
    .venv/bin/python benchmarks/cells/cells_choices.py size    # ~35 min on 2 cores
    .venv/bin/python benchmarks/cells/cells_choices.py blur    # ~20 min on 2 cores
    .venv/bin/python benchmarks/cells/cells_choices.py sharpness   # ~20 min on 2 cores
    .venv/bin/python benchmarks/cells/cells_choices.py jitter  # ~20 min on 2 cores
    .venv/bin/python benchmarks/cells/cells_choices.py floor   # ~15 min on 2 cores
    .venv/bin/python benchmarks/cells/cells_choices.py randomise   # ~15 min on 2 cores
    .venv/bin/python benchmarks/cells/cells_choices.py sharpen     # ~15 min on 2 cores
    .venv/bin/python benchmarks/cells/cells_choices.py epochs      # ~25 min on 2 cores
    .venv/bin/python benchmarks/cells/cells_choices.py hed         # ~18 min on 2 cores

Choices (``CHOICES``; the names and the CSV of each: ``leuko.reporting.results_docs.CELL_VARIANTS``):

- ``bn``: the base's BatchNorm in inference mode while fine-tuning (ImageNet statistics kept,
  ``cells.train.bn_inference: true``) against adapting to the training cells (``false``).
- ``size``: the cells at 96 px (``cells.data.image_size``; the cache is prepared again at that
  size from the same rows and framing) against the study's 64 px.
- ``blur``: sharpness jitter (``cells.train.blur_sigma``: each training cell blurred by a random
  share of a Gaussian of 1 px at 64 px) against none. At 64 px PBC's prepared cells carry more
  fine detail (``cells.detail``) than blood-cell-images' (the ``cell-detail`` block of
  docs/experiments/cells.md).
- ``sharpness``: sharpness normalisation (``cells.preprocess.max_detail``: every prepared cell,
  in training, evaluation and ``leuko classify``, blurred down to at most that much detail,
  ``cells.cap_detail``) against none; the cache is prepared again from the same rows.
- ``jitter``: no stain, colour and scale jitter in training (``cells.train.stain_jitter: 0``)
  against the study's strength 1: does the jitter's hue and saturation noise cost the classes
  told apart by the colour of their granules (eosinophils, neutrophils)?
- ``floor``: sharpness jitter with a floor (``cells.train.detail_floor``: each training cell
  blurred by a random share of a Gaussian of 1 px, but not below the detail of a typical
  blood-cell-images cell; a cell that soft already is left as it is) against none. PBC's
  softest prepared cells are its platelets (the smallest objects, enlarged most), and the
  PBC-only model calls most blood-cell-images cells platelets: sharpness stands in for the class.
- ``randomise``: sharpness randomisation (``cells.train.detail_floor`` and ``detail_ceiling``:
  every training cell blurred or sharpened to a detail drawn between a typical
  blood-cell-images cell's and a typical PBC cell's) against none: the floor's jitter only
  softens, which takes the sharp end away from the soft source's training cells.
- ``sharpen``: a sharpness floor in the preprocessing (``cells.preprocess.min_detail``: every
  prepared cell softer than that, in training, evaluation and ``leuko classify``, sharpened by
  an unsharp mask up to it, ``cells.raise_detail``) against none: the mirror of ``sharpness``,
  which softens the sharp source instead; the cache is prepared again from the same rows.
- ``contrast``: lightness-contrast jitter in training (``cells.train.low_contrast``: each
  training cell's lightness spread multiplied by a factor drawn from [0.6, 1],
  ``multisource.contrast_jitter``) against none. Before blood-cell-images' black corners were
  filled, they shrank its cells' lightness spread by about that much, and its model carried
  better to PBC's monocytes (*Black margins* in docs/experiments/cells.md): was the accident a
  remedy? Adopted after it was measured over seeds, so the study now uses it and the choice
  has nothing left to compare (the script says so and stops).
- ``stain``: the stain, colour and scale jitter in training at twice the study's strength
  (``cells.train.stain_jitter: 2``: stain density factors 1 +- 0.6, hue +- 0.06, zoom up to
  1.3x in or out, ``leuko.core.stain.jitter_ranges``) against 1. Without the jitter both
  single-source models collapse on the other source (block ``cells-jitter``): does more of it
  carry further? ``stain-1.5``: the same at 1.5, between the study's and twice it.
- ``epochs``: 10 epochs of fine-tuning (``cells.train.epochs``) against the study's 5: what
  the lean default's freed minutes would buy.
- ``hed``: the network sees the haematoxylin, eosin and DAB densities of colour deconvolution
  instead of RGB (``cells.train.input_colour: hed``, ``leuko.models.stain_input``: a layer
  inside the model, so the cells, the augmentation and ``leuko classify`` stay RGB) against
  RGB: the nucleus' stain and the granules' in channels of their own, whatever their hue.

The cell models (``cells.trainings``, or ``--trainings``) are trained again exactly as the
train-cells stage trains them (``multisource.train_cell_model``: the study's cache
``build/cells``, its seed and settings) with only the one setting changed, in a scratch folder,
and scored as evaluate-cells scores them (``crosssource.evaluate_cell_models``). Each is
compared with the study's own model of the last ``dvc repro`` on every test part and on the
unseen lab (``cells.unseen_path``, prepared again where the choice prepares cells otherwise):
accuracy and macro F1 of both with the macro F1's interval, and the paired bootstrap of the
accuracy difference over source cells. One training seed. Last, issue 35's rule
(:func:`rule_verdict`): adopt when the macro F1 on every part a model was not trained on rises
above the interval of the study's, at a cost of at most 2 points on its own test parts. Written: ``reports/ablation/<choice's csv>``; ``make results`` puts it in
docs/experiments/cells.md. ``--seed n`` trains both sides again at another seed (the baseline
too, with the study's settings) and writes ``<choice's csv stem>-seed<n>.csv``: a second
draw of the same comparison.

``--over-seeds`` (training choices only) measures the choice as the study measures its own
settings: the variant's main run and a repeat at each of ``cells.repeats.seeds``, and each
training's ensemble of them (``leuko.cells.ensemble``), against the study's runs and ensembles at the
same seeds (``results_docs.cells_choice_seeds_table``: one run's mean ± sd of each side, the paired
difference over source cells and seeds, the two ensembles). The variant's runs are kept in
``build/choices/<choice>/``, so a rerun resumes; writes the CSV of the block
``cells-<choice>-seeds``.

    .venv/bin/python benchmarks/cells/cells_choices.py floor --over-seeds   # ~70 min on 2 cores
    .venv/bin/python benchmarks/cells/cells_choices.py stain --over-seeds   # ~55 min on 2 cores
    .venv/bin/python benchmarks/cells/cells_choices.py contrast --over-seeds \
        --trainings blood-cell-images,pbc    # the two held-out directions only: ~35 min
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd
from cell_variants import difference_columns, write_table

ROOT = Path(__file__).resolve().parents[2]


# blocks cells-<choice> of docs/experiments/cells.md (leuko.reporting.results_docs.CELL_VARIANTS)
CHOICES = ("bn", "size", "blur", "sharpness", "jitter", "floor", "randomise", "sharpen",
           "contrast", "stain", "stain-1.5", "epochs", "hed")
ALTERNATIVE_SIZE = 96
ALTERNATIVE_BLUR = 1.0
# Chosen from the cell-detail blocks before cells.preprocess.fill_dark_margin (commit
# e151193), when blood-cell-images' TRAIN, VAL and TEST cells, washed out by their black
# corners, measured ~10 and PBC's ~22; every choice below was measured on those cells, bar
# the floor over seeds, measured again after the fill with the floor at 14 (it was 10).
ALTERNATIVE_MAX_DETAIL = 12.0  # between the two sources' median detail then
ALTERNATIVE_FLOOR = 14.0  # about blood-cell-images' median detail now (TRAIN 14.3)
ALTERNATIVE_CEILING = 22.0  # about PBC's median detail
ALTERNATIVE_MIN_DETAIL = 18.0  # below PBC's median detail of every class but platelets
# stain jitter strengths against the study's 1 (leuko.core.stain.jitter_ranges), by choice
ALTERNATIVE_STAIN_JITTER = {"stain": 2.0, "stain-1.5": 1.5}
ALTERNATIVE_LOW_CONTRAST = 0.4  # factors 0.6..1: what the black corners did (*Black margins*)
ALTERNATIVE_EPOCHS = 10  # twice the study's 5


def alternative_label(choice: str) -> str | None:
    """What the alternative side of ``choice`` is with the constants above, as its block
    names it; None where the name holds no value."""
    return {"size": f"{ALTERNATIVE_SIZE} px", "blur": f"blur {ALTERNATIVE_BLUR:g} px",
            "floor": f"blur {ALTERNATIVE_BLUR:g} px, floor {ALTERNATIVE_FLOOR:g}",
            "randomise": f"detail drawn from {ALTERNATIVE_FLOOR:g}..{ALTERNATIVE_CEILING:g}",
            "sharpness": f"detail capped at {ALTERNATIVE_MAX_DETAIL:g}",
            "sharpen": f"sharpened to detail {ALTERNATIVE_MIN_DETAIL:g}",
            "epochs": f"{ALTERNATIVE_EPOCHS} epochs",
            "hed": "stain densities (HED)",
            **{name: f"stain jitter {strength:g}"
               for name, strength in ALTERNATIVE_STAIN_JITTER.items()}}.get(choice)


#: The results block of a single-seed run where it is not ``cells-<choice>``: the floor and
#: the randomisation moved from a floor of 10 to 14 after their blocks ``cells-floor`` and
#: ``cells-randomise`` were measured, which stay as the record of those runs.
SINGLE_SEED_BLOCKS = {"floor": "cells-floor-14", "randomise": "cells-randomise-14"}


def block_of(choice: str, over_seeds: bool = False) -> str:
    """The results block (``results_docs.CELL_VARIANTS``) a run of ``choice`` writes:
    ``cells-<choice>-seeds`` over seeds, else :data:`SINGLE_SEED_BLOCKS` or ``cells-<choice>``."""
    if over_seeds:
        return f"cells-{choice}-seeds"
    return SINGLE_SEED_BLOCKS.get(choice, f"cells-{choice}")


def variant_of(choice: str, config):
    """The study's cell settings (``multisource.CellStudy``) with the choice's alternative."""
    if choice == "bn":
        return replace(config, train=replace(config.train, bn_inference=True))
    if choice == "size":
        return replace(config, data=replace(config.data, image_size=ALTERNATIVE_SIZE))
    if choice == "blur":
        return replace(config, train=replace(config.train, blur_sigma=ALTERNATIVE_BLUR))
    if choice == "floor":
        return replace(config, train=replace(config.train, blur_sigma=ALTERNATIVE_BLUR,
                                             detail_floor=ALTERNATIVE_FLOOR))
    if choice == "randomise":
        return replace(config, train=replace(config.train, blur_sigma=ALTERNATIVE_BLUR,
                                             detail_floor=ALTERNATIVE_FLOOR,
                                             detail_ceiling=ALTERNATIVE_CEILING))
    if choice == "jitter":
        return replace(config, train=replace(config.train, stain_jitter=0.0))
    if choice in ALTERNATIVE_STAIN_JITTER:
        return replace(config, train=replace(config.train,
                                             stain_jitter=ALTERNATIVE_STAIN_JITTER[choice]))
    if choice == "epochs":
        return replace(config, train=replace(config.train, epochs=ALTERNATIVE_EPOCHS))
    if choice == "hed":
        return replace(config, train=replace(config.train, input_colour="hed"))
    if choice == "contrast":
        return replace(config, train=replace(config.train, low_contrast=ALTERNATIVE_LOW_CONTRAST))
    if choice == "sharpen":
        return replace(config, preprocess=replace(config.preprocess,
                                                  min_detail=ALTERNATIVE_MIN_DETAIL))
    if choice == "sharpness":
        return replace(config, preprocess=replace(config.preprocess,
                                                  max_detail=ALTERNATIVE_MAX_DETAIL))
    raise ValueError(f"unknown choice {choice!r}; expected one of {CHOICES}")


#: The most a choice may cost on a model's own sources' test parts, in macro F1 (issue 35).
OWN_COST = 0.02


def rule_verdict(table: pd.DataFrame, before: str, after: str) -> str:
    """Issue 35's rule on one seed's rows: the choice is adopted when, on every part a model
    was not trained on (the unseen lab, the held-out source of each leave-one-source-out
    pair), its macro F1 rises above the interval of the study's, and on the model's own
    sources' test parts it costs at most :data:`OWN_COST`."""
    unseen_parts = table[table["unseen source"]]
    raised = unseen_parts[f"macro F1 {after}"] > unseen_parts[f"macro F1 high {before}"]
    own = table[~table["unseen source"]]
    cost = own[f"macro F1 {before}"] - own[f"macro F1 {after}"]
    lines = [f"{r['trained on']} on {r['tested on']}: macro F1 {r[f'macro F1 {before}']:.3f} "
             f"[{r[f'macro F1 low {before}']:.3f}, {r[f'macro F1 high {before}']:.3f}] -> "
             f"{r[f'macro F1 {after}']:.3f}: {'raised' if up else 'not raised'} beyond the "
             "interval" for (_, r), up in zip(unseen_parts.iterrows(), raised, strict=True)]
    lines.append(f"largest cost on an own test part: {100 * cost.max():+.1f} points of macro F1 "
                 f"(bound {100 * OWN_COST:.0f})")
    adopted = bool(raised.all() and (cost <= OWN_COST).all())
    return "\n".join(lines + [f"rule (issue 35): {'ADOPT' if adopted else 'do not adopt'} "
                               f"{after} over {before} (one seed)"])


def run_over_seeds(choice: str, variant, trainings: tuple[str, ...], cache, seed: int,
                   n_boot: int, root: Path) -> None:
    """The variant's runs at the study's seeds (its main run at ``seed`` and a repeat at each
    of ``cells.repeats.seeds``), its ensembles, all scored as evaluate-cells scores them, under
    ``root`` (kept: a rerun picks up where one stopped). The baseline is the study's own runs
    and ensembles at the same seeds, trained by ``dvc repro``."""
    from leuko.cells import crosssource, multisource
    from leuko.cells.ensemble import build_cell_ensemble
    from leuko.thesis import study

    paths = study.Paths(root)
    for training in trainings:
        for repeat_seed in (None, *variant.repeat_seeds):
            the_id = multisource.cell_model_id(training, repeat_seed)
            if not paths.train_summary(the_id).is_file():
                print(f"[{choice}] training {the_id}", flush=True)
                multisource.train_cell_model(training, cache, variant.train, variant.abstain,
                                             variant.preprocess, seed, paths=paths,
                                             repeat_seed=repeat_seed)
            if not paths.metrics(the_id).is_file():
                crosssource.evaluate_cell_models([the_id], cache, n_boot, seed,
                                                 variant.shift_per_class, paths=paths)
    for training in trainings:
        the_id = multisource.ensemble_model_id(training)
        if not paths.train_summary(the_id).is_file():
            print(f"[{choice}] averaging {the_id}", flush=True)
            build_cell_ensemble(training, cache, variant, paths=paths)
        if not paths.metrics(the_id).is_file():
            crosssource.evaluate_cell_models([the_id], cache, n_boot, seed,
                                             variant.shift_per_class, paths=paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("choice", choices=CHOICES)
    parser.add_argument("--trainings", default=None,
                        help="comma-separated cells.trainings to run (default: all)")
    parser.add_argument("--n-boot", type=int, default=None,
                        help="bootstrap draws of each model's intervals (default: the study's "
                             "evaluate.n_boot, so the variant's metrics match its models')")
    parser.add_argument("--seed", type=int, default=None,
                        help="training seed of both sides (default: the study's, whose models "
                             "are the baseline); another seed trains the baseline too and "
                             "writes <csv>-seed<n>.csv beside the choice's CSV")
    parser.add_argument("--over-seeds", action="store_true",
                        help="the variant at every seed the study trains (main run and "
                             "cells.repeats.seeds) and its ensembles, against the study's runs "
                             "and ensembles; runs kept in build/choices/<choice>/; writes the "
                             "CSV of the block cells-<choice>-seeds")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    from leuko.cells import crosssource, multisource, unseen
    from leuko.core.datasets import DIFFERENTIAL_CLASSES
    from leuko.core.machine import machine_line
    from leuko.core.params import read_block
    from leuko.reporting.results_docs import cell_variant, cells_choice_seeds_table
    from leuko.thesis import study
    from leuko.thesis.evaluation import source_cells

    choice = cell_variant(block_of(args.choice, args.over_seeds))  # docs/experiments/cells.md
    label = alternative_label(args.choice)
    if label is not None and label != choice.alternative:
        raise SystemExit(f"{args.choice}: block {choice.block} holds {choice.alternative!r}, this "
                         f"run would measure {label!r}: give it a block of its own in "
                         "results_docs.CELL_VARIANTS rather than overwrite that one")
    config = multisource.CellStudy.from_params()
    variant = variant_of(args.choice, config)
    if variant == config:
        raise SystemExit(f"{args.choice}: the study already uses this choice's setting (adopted "
                         f"after its block {choice.block} was measured), so both sides "
                         "would be the same; compare it with the setting before by hand")
    trainings = tuple(args.trainings.split(",")) if args.trainings else config.trainings
    seed = int(read_block("data")["seed"])
    if args.n_boot is None:
        args.n_boot = int(read_block("evaluate")["n_boot"])
    cache = multisource.load_cell_cache()
    labs = unseen.load_unseen_caches(read_block("cells"))  # judged on, never trained on
    train_seed = seed if args.seed is None else args.seed
    if args.over_seeds:
        if (variant.data, variant.preprocess) != (config.data, config.preprocess):
            raise SystemExit(f"--over-seeds: {args.choice} prepares the cells again; only "
                             "training choices are supported")
        root = ROOT / "build" / "choices" / args.choice
        run_over_seeds(args.choice, variant, trainings, cache, seed, args.n_boot, root)
        ids = [m for t in trainings
               for m in (*variant.run_ids(t), multisource.ensemble_model_id(t))]
        table = cells_choice_seeds_table(ids, study.Paths(), study.Paths(root), seed=seed)
        table["machine"] = machine_line()
        write_table(table.to_dict(orient="records"), Path(choice.csv))
        return 0
    work = Path(tempfile.mkdtemp(prefix=f"cells-{args.choice}-"))
    rows = []
    try:
        # the study's models are the baseline at its own seed; at another seed both are trained
        runs = {False: study.Paths() if train_seed == seed else study.Paths(work / "baseline"),
                True: study.Paths(work / "variant")}
        if (variant.data, variant.preprocess) != (config.data, config.preprocess):
            # the same rows and framing, prepared again
            columns = ["path", "source", "label", "split", "group", "sha256"]
            multisource.build_cell_cache(cache.rows.sort_values("index")[columns],
                                         variant.data, variant.preprocess, runs[True],
                                         seed=seed)
            variant_cache = multisource.load_cell_cache(runs[True])
            # the unseen lab prepared as the variant prepares cells
            unseen.build_unseen_cache(read_block("cells")["unseen_path"], variant,
                                      list(DIFFERENTIAL_CLASSES), paths=runs[True])
            variant_labs = {name: unseen.load_unseen_cache(name, runs[True]) for name in labs}
        else:
            variant_cache, variant_labs = cache, labs
        settings = {True: (variant, variant_cache, variant_labs)}
        if train_seed != seed:
            settings[False] = (config, cache, labs)
        for v, (cells_study, cells_cache, cells_labs) in settings.items():
            for training in trainings:
                multisource.train_cell_model(training, cells_cache, cells_study.train,
                                             cells_study.abstain, cells_study.preprocess,
                                             train_seed, paths=runs[v])
            crosssource.evaluate_cell_models([multisource.cell_model_id(t) for t in trainings],
                                             cells_cache, args.n_boot, seed,
                                             cells_study.shift_per_class, paths=runs[v],
                                             unseen=cells_labs)
        names = {False: choice.baseline, True: choice.alternative}
        for training in trainings:
            the_id = multisource.cell_model_id(training)
            metrics = {v: study.read_json(p.metrics(the_id)) for v, p in runs.items()}
            summaries = {v: study.read_json(p.train_summary(the_id)) for v, p in runs.items()}
            predictions = {v: pd.read_csv(p.predictions(the_id), keep_default_na=False)
                           for v, p in runs.items()}
            for source, split in [*multisource.TEST_PARTS,
                                  *((name, unseen.UNSEEN_SPLIT) for name in labs)]:
                part = f"{source}/{split}"
                row = {"trained on": training, "tested on": part,
                       "unseen source": source not in summaries[True]["sources"]}
                for v, name in names.items():
                    scores = metrics[v]["splits"][part]
                    row["cells"], row["images"] = scores["n_cells"], scores["n"]
                    for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro F1")):
                        row[f"{label} {name}"] = scores["intervals"][key]["value"]
                    for end in ("low", "high"):
                        row[f"macro F1 {end} {name}"] = scores["intervals"]["macro_f1"][end]
                    row[f"validation accuracy {name}"] = summaries[v]["saved_val_accuracy"]
                    row[f"train seconds {name}"] = summaries[v]["train_seconds"]
                frames = {v: p[(p["source"] == source) & (p["split"] == split)]
                          .set_index("path") for v, p in predictions.items()}
                cells, _ = (labs[source] if source in labs else cache).part(source, split)
                groups = pd.Series(source_cells(cells), index=cells["path"])
                index = frames[False].index
                row.update(difference_columns(
                    frames[False]["actual"].to_numpy(),
                    frames[True].loc[index, "predicted"].to_numpy(),
                    frames[False]["predicted"].to_numpy(), groups.loc[index].to_numpy(), seed))
                row["machine"] = machine_line()
                rows.append(row)
                print(pd.Series(row).to_string(), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    csv = Path(choice.csv)
    if train_seed != seed:
        csv = csv.with_name(f"{csv.stem}-seed{train_seed}{csv.suffix}")
    write_table(rows, csv)
    print(rule_verdict(pd.DataFrame(rows), choice.baseline, choice.alternative))
    return 0


if __name__ == "__main__":
    sys.exit(main())
