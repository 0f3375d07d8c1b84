"""Dataset adapters: each turns a dataset in its published layout into one manifest table.

A manifest has one row per image and the columns of ``MANIFEST_COLUMNS``:
``path`` (relative to the project root when possible), ``label``, ``split`` (the dataset's own
split, or ``""`` when the dataset has none and the study splits it), ``group`` (the source cell
or patient: rows of one group must never straddle two splits), ``sha256`` (content hash: byte-
identical files must never straddle two splits either), ``height``, ``width``.

Every image is decoded once while the manifest is built (``leuko.core.images.scan_images``); an
unreadable image is reported by path and reason under the ``bad_images`` policy.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leuko.core.images import SUPPORTED_SUFFIXES, BadImage, scan_images

MANIFEST_COLUMNS = ["path", "label", "split", "group", "sha256", "height", "width"]

WBC_CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
LEUKEMIA_CLASSES = ("ALL", "HEM")  # lymphoblast (acute lymphoblastic leukemia) / healthy
WBC_SPLITS = {"TRAIN": "train", "TEST": "test", "TEST_SIMPLE": "test_simple"}
# The five white cells a differential count counts, and the other cells PBC labels: kept as
# classes of their own, so that an immature granulocyte is never forced into the five.
DIFFERENTIAL_CLASSES = ("BASOPHIL", "EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
OTHER_CELL_CLASSES = ("IG", "ERYTHROBLAST", "PLATELET")
PBC_CLASSES = DIFFERENTIAL_CLASSES + OTHER_CELL_CLASSES


class DatasetError(ValueError):
    """A dataset folder does not have the layout its adapter expects."""


@dataclass(frozen=True)
class Prepared:
    """A manifest and the images that could not be read (empty unless policy is 'skip')."""

    manifest: pd.DataFrame
    bad: list[BadImage]


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path} (expected a folder; did `dvc pull` run?)")
    return path


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES)


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _build(rows: list[dict], policy: str, progress: bool) -> Prepared:
    """Decode every image once; attach hash and size; drop (and return) unreadable ones."""
    infos, bad = scan_images([Path(r["path"]) for r in rows], policy=policy, progress=progress)
    by_path = {Path(i.path): i for i in infos}
    kept = []
    for row in rows:
        info = by_path.get(Path(row["path"]))
        if info is None:
            continue
        kept.append(
            {**row, "path": _relative(Path(row["path"])), "sha256": info.sha256,
             "height": info.height, "width": info.width}
        )
    frame = pd.DataFrame(kept)
    extra = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    frame = frame.reindex(columns=MANIFEST_COLUMNS + extra) if kept else pd.DataFrame(
        columns=MANIFEST_COLUMNS)
    return Prepared(frame.sort_values("path", kind="stable").reset_index(drop=True), bad)


# --- blood-cell-images (Kaggle "Blood Cell Images", dataset2-master) -----------------------

_WBC_NAME = re.compile(r"^_(\d+)_(\d+)\.jpe?g$", re.IGNORECASE)


def blood_cell_images(root: str | Path, policy: str = "fail", progress: bool = True) -> Prepared:
    """The 4-class WBC crops in ``images/{TRAIN,TEST,TEST_SIMPLE}/<CLASS>/_<cell>_<copy>.jpeg``.

    ``group`` is the source cell: ``<split>/<CLASS>/<cell>``; TRAIN and TEST images are augmented
    copies of few cells, and the copies of one cell share a group.
    """
    images = _require_dir(Path(root) / "images", "blood-cell-images folder images/")
    rows = []
    for folder, split in WBC_SPLITS.items():
        split_dir = _require_dir(images / folder, f"split folder {folder}")
        found = {p.name for p in split_dir.iterdir() if p.is_dir()}
        unknown = found - set(WBC_CLASSES)
        if unknown:
            raise DatasetError(
                f"unknown class folder(s) {sorted(unknown)} in {split_dir}; expected {list(WBC_CLASSES)}")
        for label in WBC_CLASSES:
            class_dir = _require_dir(split_dir / label, f"class folder {label}")
            files = _images_in(class_dir)
            if not files:
                raise DatasetError(f"class folder {class_dir} holds no images")
            for path in files:
                match = _WBC_NAME.match(path.name)
                cell = match.group(1) if match else path.stem
                rows.append({"path": path, "label": label, "split": split,
                             "group": f"{split}/{label}/{cell}"})
    return _build(rows, policy, progress)


# --- PBC (Acevedo et al. 2020, CellaVision DM96, Barcelona) -------------------------------


def pbc(root: str | Path, policy: str = "fail", progress: bool = True) -> Prepared:
    """PBC single-cell images in ``<class>/<name>.jpg`` (8 lower-case class folders).

    PBC publishes no donor ids, so ``group`` is the content hash (``sha256``): byte-identical
    files (three basophil pairs) form one group and never straddle two splits. ``split`` is
    ``""``: the study splits the data.
    """
    folder = _require_dir(Path(root), "PBC folder")
    expected = {c.lower() for c in PBC_CLASSES}
    found = {p.name for p in folder.iterdir() if p.is_dir()}
    unknown = found - expected
    if unknown:
        raise DatasetError(f"unknown class folder(s) {sorted(unknown)} in {folder}; expected "
                           f"{sorted(expected)}")
    missing = expected - found
    if missing:
        raise DatasetError(f"class folder(s) {sorted(missing)} missing in {folder}")
    rows = []
    for label in PBC_CLASSES:
        files = _images_in(folder / label.lower())
        if not files:
            raise DatasetError(f"class folder {folder / label.lower()} holds no images")
        rows += [{"path": path, "label": label, "split": "", "group": ""} for path in files]
    prepared = _build(rows, policy, progress)
    prepared.manifest["group"] = "sha256:" + prepared.manifest["sha256"].str[:16]
    return prepared


# --- ALL-IDB2 -------------------------------------------------------------------------------

_ALLIDB_NAME = re.compile(r"^(Im\d{3})_([01])\.tif$", re.IGNORECASE)


def all_idb2(root: str | Path, policy: str = "fail", progress: bool = True) -> Prepared:
    """ALL-IDB2: ``ImNNN_1.tif`` is a lymphoblast (ALL), ``ImNNN_0.tif`` a healthy cell (HEM).

    Every image is its own group (one cell per image; patients are not published).
    """
    folder = _require_dir(Path(root), "ALL-IDB2 folder")
    rows = []
    for path in _images_in(folder):
        match = _ALLIDB_NAME.match(path.name)
        if not match:
            raise DatasetError(
                f"unexpected file name {path.name} in {folder}: expected ImNNN_1.tif (ALL) "
                "or ImNNN_0.tif (healthy)")
        label = "ALL" if match.group(2) == "1" else "HEM"
        rows.append({"path": path, "label": label, "split": "", "group": match.group(1)})
    if not rows:
        raise DatasetError(f"no ALL-IDB2 images (ImNNN_[01].tif) in {folder}")
    return _build(rows, policy, progress)


# --- C-NMC 2019 -----------------------------------------------------------------------------

CNMC_FOLDS = ("fold_0", "fold_1", "fold_2")
CNMC_PRELIM_DIR = Path("validation_data/C-NMC_test_prelim_phase_data")
CNMC_PRELIM_LABELS = "C-NMC_test_prelim_phase_data_labels.csv"
_CNMC_NAME = re.compile(r"^UID_(H?\d+)_(\d+)_(\d+)_(all|hem)\.bmp$", re.IGNORECASE)


def cnmc_patient(name: str) -> str:
    """Patient id from a C-NMC file name: ``UID_H10_1_2_hem.bmp`` -> ``H10``, ``UID_45_…`` -> ``45``."""
    match = _CNMC_NAME.match(Path(name).name)
    if not match:
        raise DatasetError(
            f"unexpected C-NMC file name {name!r}: expected UID_<patient>_<image>_<cell>_{{all,hem}}.bmp")
    return match.group(1)


def cnmc(root: str | Path, policy: str = "fail", progress: bool = True) -> Prepared:
    """C-NMC 2019 in its published layout.

    ``training_data/fold_{0,1,2}/{all,hem}/UID_<patient>_<image>_<cell>_{all,hem}.bmp`` (split
    ``""``, column ``fold``), and, when present, the preliminary test phase
    ``validation_data/C-NMC_test_prelim_phase_data/<n>.bmp`` labelled by its CSV (split
    ``prelim``). ``group`` is the patient.
    """
    root = Path(root)
    training = _require_dir(root / "training_data", "C-NMC folder training_data/")
    rows = []
    for fold in CNMC_FOLDS:
        fold_dir = training / fold
        if not fold_dir.is_dir():
            raise DatasetError(
                f"C-NMC fold missing: {fold_dir} (expected {', '.join(CNMC_FOLDS)} under {training})")
        for sub in ("all", "hem"):
            class_dir = _require_dir(fold_dir / sub, f"C-NMC class folder {sub}/ of {fold}")
            for path in _images_in(class_dir):
                patient = cnmc_patient(path.name)
                name_class = _CNMC_NAME.match(path.name).group(4).lower()
                if name_class != sub:
                    raise DatasetError(f"{path}: file name says '{name_class}' but lies in {sub}/")
                rows.append({"path": path, "label": sub.upper(), "split": "", "group": patient,
                             "fold": fold})
    if not rows:
        raise DatasetError(f"no C-NMC images under {training}")
    prelim = root / CNMC_PRELIM_DIR
    if prelim.is_dir():
        rows += _cnmc_prelim_rows(prelim)
    return _build(rows, policy, progress)


def _cnmc_prelim_rows(folder: Path) -> list[dict]:
    """Rows of the preliminary test phase, from its label CSV (Patient_ID, new_names, labels)."""
    csv = folder / CNMC_PRELIM_LABELS
    if not csv.is_file():
        csv = folder.parent / CNMC_PRELIM_LABELS
    if not csv.is_file():
        raise DatasetError(f"C-NMC prelim labels missing: expected {CNMC_PRELIM_LABELS} in {folder}")
    table = pd.read_csv(csv)
    needed = {"Patient_ID", "new_names", "labels"}
    if not needed <= set(table.columns):
        raise DatasetError(f"{csv} lacks column(s) {sorted(needed - set(table.columns))}")
    rows, missing = [], []
    for record in table.itertuples(index=False):
        path = folder / str(record.new_names)
        if not path.is_file():
            missing.append(str(record.new_names))
            continue
        rows.append({"path": path, "label": "ALL" if int(record.labels) == 1 else "HEM",
                     "split": "prelim", "group": cnmc_patient(str(record.Patient_ID)),
                     "fold": "prelim"})
    if missing:
        raise DatasetError(f"{csv} names {len(missing)} missing file(s) in {folder}: "
                           + ", ".join(missing[:10]) + (" …" if len(missing) > 10 else ""))
    return rows


# --- BCCD (Pascal VOC) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """One annotated object of a VOC file, in pixel corners (xmin, ymin, xmax, ymax)."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int


def read_voc_boxes(xml_path: str | Path) -> list[Box]:
    """All objects of one Pascal VOC annotation file."""
    tree = ET.parse(xml_path)
    boxes = []
    for obj in tree.getroot().iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        coords = [int(float(bb.findtext(k, "0"))) for k in ("xmin", "ymin", "xmax", "ymax")]
        boxes.append(Box(obj.findtext("name", "").strip(), *coords))
    return boxes


def _voc_splits(root: Path) -> dict[str, str]:
    splits = {}
    for split in ("train", "val", "test"):
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        if listing.is_file():
            for stem in listing.read_text().split():
                splits[stem] = split
    return splits


def _smear_categories(labels_csv: Path) -> dict[int, str]:
    """Smear number -> its single WBC class from blood-cell-images' ``labels.csv`` (blank or
    several classes -> omitted)."""
    if not labels_csv.is_file():
        return {}
    table = pd.read_csv(labels_csv)
    result = {}
    for record in table.itertuples(index=False):
        category = str(record.Category).strip() if pd.notna(record.Category) else ""
        if category and "," not in category and category.upper() in WBC_CLASSES:
            result[int(record.Image)] = category.upper()
    return result


def bccd(root: str | Path, labels_csv: str | Path | None = None, policy: str = "fail",
         progress: bool = True) -> Prepared:
    """BCCD smears with their WBC boxes: one row per WBC box.

    Columns beyond the manifest's: ``xmin, ymin, xmax, ymax`` (the box in the smear at
    ``path``) and ``n_wbc`` (WBC boxes on that smear). ``label`` is the smear's class from
    ``labels_csv`` (blood-cell-images' ``labels.csv``) when the smear has exactly one WBC box and
    one class, else ``"WBC"``. ``split`` is the VOC split; ``group`` the smear.
    """
    root = Path(root)
    annotations = _require_dir(root / "Annotations", "BCCD folder Annotations/")
    images = _require_dir(root / "JPEGImages", "BCCD folder JPEGImages/")
    splits = _voc_splits(root)
    categories = _smear_categories(Path(labels_csv)) if labels_csv else {}
    rows = []
    for xml in sorted(annotations.glob("*.xml")):
        image = images / f"{xml.stem}.jpg"
        if not image.is_file():
            raise DatasetError(f"{xml} has no image: expected {image}")
        wbc = [b for b in read_voc_boxes(xml) if b.name.upper() == "WBC"]
        number = int(re.sub(r"\D", "", xml.stem) or -1)
        label = categories.get(number, "WBC") if len(wbc) == 1 else "WBC"
        for box in wbc:
            rows.append({"path": image, "label": label, "split": splits.get(xml.stem, ""),
                         "group": xml.stem, "xmin": box.xmin, "ymin": box.ymin,
                         "xmax": box.xmax, "ymax": box.ymax, "n_wbc": len(wbc)})
    if not rows:
        raise DatasetError(f"no WBC boxes in {annotations}")
    return _build(rows, policy, progress)


ADAPTERS = {
    "blood-cell-images": blood_cell_images,
    "all-idb2": all_idb2,
    "cnmc": cnmc,
    "bccd": bccd,
    "pbc": pbc,
}


def adapter_for(name: str):
    """The adapter function registered under ``name``."""
    if name not in ADAPTERS:
        raise ValueError(f"dataset must be one of {sorted(ADAPTERS)}, got {name!r}")
    return ADAPTERS[name]


def detect_layout(root: str | Path) -> str:
    """Which adapter fits the folder ``root`` (so a user can point the study at C-NMC)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset path does not exist: {root}")
    if (root / "training_data").is_dir():
        return "cnmc"
    if (root / "images" / "TRAIN").is_dir():
        return "blood-cell-images"
    if (root / "Annotations").is_dir():
        return "bccd"
    if {p.name for p in root.iterdir() if p.is_dir()} >= {c.lower() for c in PBC_CLASSES}:
        return "pbc"
    if any(_ALLIDB_NAME.match(p.name) for p in root.iterdir()):
        return "all-idb2"
    raise DatasetError(
        f"cannot tell the layout of {root}: expected C-NMC (training_data/), blood-cell-images "
        "(images/TRAIN/), BCCD (Annotations/), PBC (basophil/ ... platelet/) or ALL-IDB2 (ImNNN_[01].tif)")


def class_counts(frame: pd.DataFrame, by: Iterable[str] = ("split", "label")) -> pd.DataFrame:
    """Images per split and class, as a wide table (rows: split, columns: class)."""
    by = list(by)
    return frame.groupby(by).size().unstack(fill_value=0)
