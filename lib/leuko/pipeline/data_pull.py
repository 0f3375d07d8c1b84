"""``python -m leuko.pipeline.data_pull [--force]``: fetch ``data/`` from the DVC remote, or say in one
line why not and how to point the remote elsewhere.

``data/`` is DVC's: ``dvc pull`` makes the folder match ``data.dvc``, and deletes a file there
that ``data.dvc`` does not list whenever its content is in DVC's cache (a copy of one of the
data set's images, or anything once ``dvc add``-ed), without asking. So before pulling, this
lists the files under ``data/`` that no version of the data put there (neither the version
being pulled, nor the one the last pull recorded, nor any version of ``data.dvc`` in the git
history) and refuses to pull while there are any, naming them; ``--force`` (``make data
FORCE=1``) pulls anyway and lets DVC delete them (``dvc pull --force``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

HINT = ("point it at your copy with `dvc remote modify --local lab url /path/to/dvc-store` "
        "and run `make data` again")
DVC_FILE = Path("data.dvc")
#: What the last successful pull checked out: the md5 of its ``.dir`` listing (also the stamp
#: ``make data`` keeps; it lives outside ``data/``, where a file would change what DVC tracks).
RECORD = Path(".dvc/tmp/data-pulled")
SHOWN = 20  # foreign files named one by one; the rest are counted per folder
#: The environment's ``dvc`` (found without activating it), else the one on PATH.
DVC = (str(Path(sys.executable).with_name("dvc"))
       if Path(sys.executable).with_name("dvc").is_file() else "dvc")


def remote_url(name: str = "lab") -> str:
    """The remote's URL as DVC resolves it (``--local`` overrides included)."""
    out = subprocess.run([DVC, "remote", "list"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            return parts[1]
    raise SystemExit(f"no DVC remote named {name!r} in .dvc/config; {HINT}")


def local_remote(url: str) -> Path | None:
    """The folder of a local remote (relative URLs are relative to ``.dvc/``); None for a URL."""
    if "://" in url:
        return None
    return Path(url) if Path(url).is_absolute() else (Path(".dvc") / url).resolve()


def dir_md5(dvc_text: str) -> str | None:
    """The md5 of the ``.dir`` listing a ``.dvc`` file's text names (None for a single file)."""
    outs = (yaml.safe_load(dvc_text) or {}).get("outs") or []
    md5 = str(outs[0].get("md5", "")) if outs else ""
    return md5.removesuffix(".dir") if md5.endswith(".dir") else None


def listing(md5: str, stores: list[Path]) -> set[str] | None:
    """The relative paths a ``.dir`` object lists, from the first of ``stores`` (DVC caches or
    local remotes) that holds it; None when none does."""
    for store in stores:
        for path in (store / "files" / "md5" / md5[:2] / f"{md5[2:]}.dir",  # DVC 3
                     store / md5[:2] / f"{md5[2:]}.dir"):  # DVC 2
            if path.is_file():
                return {entry["relpath"] for entry in json.loads(path.read_text())}
    return None


def history_md5s(dvc_file: Path = DVC_FILE) -> list[str]:
    """The ``.dir`` md5 of every committed version of ``dvc_file`` (none outside git)."""
    log = subprocess.run(["git", "log", "--format=%H", "--", str(dvc_file)],
                         capture_output=True, text=True)
    md5s = []
    for commit in log.stdout.split() if log.returncode == 0 else []:
        shown = subprocess.run(["git", "show", f"{commit}:{dvc_file}"], capture_output=True,
                               text=True)
        md5 = dir_md5(shown.stdout) if shown.returncode == 0 else None
        if md5 and md5 not in md5s:
            md5s.append(md5)
    return md5s


def workspace_files(data: Path) -> list[str]:
    """Every file under ``data`` (links included), relative to it, sorted."""
    found = []
    for folder, dirs, files in os.walk(data):
        dirs.sort()
        base = Path(folder).relative_to(data)
        found += [(base / name).as_posix() for name in sorted(files)]
    return found


def dvc_ignored(paths: list[str], data: Path) -> set[str]:
    """Those of ``paths`` (relative to ``data``) that ``.dvcignore`` hides from DVC, which then
    leaves them alone; asks DVC only when ``.dvcignore`` has a pattern."""
    ignore = Path(".dvcignore")
    patterns = [line for line in (ignore.read_text().splitlines() if ignore.is_file() else [])
                if line.strip() and not line.lstrip().startswith("#")]
    if not patterns or not paths:
        return set()
    ignored = set()
    for start in range(0, len(paths), 500):
        chunk = [str(data / p) for p in paths[start:start + 500]]
        out = subprocess.run([DVC, "check-ignore", *chunk], capture_output=True, text=True)
        ignored |= {Path(line.strip()).relative_to(data).as_posix()
                    for line in out.stdout.splitlines() if line.strip()}
    return ignored


def foreign_files(data: Path, known: set[str]) -> list[str]:
    """The files under ``data`` that no listing in ``known`` accounts for and DVC does not
    ignore: what ``dvc pull`` may delete although no pull put them there."""
    if not data.is_dir():
        return []
    unknown = [p for p in workspace_files(data) if p not in known]
    ignored = dvc_ignored(unknown, data)
    return [p for p in unknown if p not in ignored]


def describe_foreign(files: list[str], data: Path) -> str:
    """The refusal: the files named (the first :data:`SHOWN`, the rest counted per folder),
    why, and the ways on."""
    lines = [f"error: {len(files)} file(s) under {data}/ are not part of the data (data.dvc) "
             "and were not put there by `make data`; `dvc pull` could delete them, so nothing "
             "was pulled:"]
    lines += [f"  {data / p}" for p in files[:SHOWN]]
    rest = Counter(str(data / Path(p).parent) for p in files[SHOWN:])
    lines += [f"  ... and {n} more in {folder}/" for folder, n in sorted(rest.items())]
    lines.append(f"{data}/ is DVC's (tracked by data.dvc). Move your own images out of it "
                 "(e.g. to my-cells/ beside it; `dvc add my-cells` versions them), or let "
                 "the pull delete them: `make data FORCE=1` "
                 "(`python -m leuko.pipeline.data_pull --force`).")
    return "\n".join(lines)


def fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Pull ``data.dvc``; exit 1 with a message when the remote is unreachable or when
    ``data/`` holds files the pull could delete (unless ``--force``)."""
    parser = argparse.ArgumentParser(prog="python -m leuko.pipeline.data_pull",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true",
                        help="pull even if data/ holds files no pull put there (DVC deletes "
                             "them)")
    args = parser.parse_args(argv)
    url = remote_url()
    remote = local_remote(url)
    if remote is not None and not remote.is_dir():
        return fail(f"error: the DVC remote 'lab' ({remote}) is not reachable; {HINT}")
    data = Path("data")
    target = dir_md5(DVC_FILE.read_text())
    if not args.force and target and data.is_dir():
        stores = [Path(".dvc/cache")] + ([remote] if remote is not None else [])
        known = listing(target, stores)
        if known is None:  # a remote DVC reaches by URL: fetch, then read the cache
            fetched = subprocess.run([DVC, "fetch", str(DVC_FILE)], capture_output=True,
                                     text=True)
            cache = subprocess.run([DVC, "cache", "dir"], capture_output=True, text=True)
            stores.append(Path(cache.stdout.strip() or ".dvc/cache"))
            known = listing(target, stores) if fetched.returncode == 0 else None
        if known is None:
            return fail(f"error: the data's file list ({target}.dir) is in neither the DVC "
                        f"cache nor remote 'lab' ({url}); {HINT}")
        recorded = RECORD.read_text().strip() if RECORD.is_file() else ""
        for md5 in ([recorded] if recorded else []) + history_md5s():
            known |= listing(md5, stores) or set()
        foreign = foreign_files(data, known)
        if foreign:
            return fail(describe_foreign(foreign, data))
    command = [DVC, "pull", *(["--force"] if args.force else []), str(DVC_FILE)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        reason = " ".join(line.strip() for line in result.stderr.strip().splitlines()
                          if line.strip()) or "unknown error"
        reason = reason if len(reason) <= 400 else reason[:400] + " ..."
        return fail(f"error: `dvc pull` from remote 'lab' ({url}) failed ({reason}); {HINT}")
    if target:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(target + "\n")
    print(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "data up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
