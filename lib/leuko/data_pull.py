"""``python -m leuko.data_pull``: fetch ``data/`` from the DVC remote, or say in one line why
not and how to point the remote elsewhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HINT = ("point it at your copy with `dvc remote modify --local lab url /path/to/dvc-store` "
        "and run `make data` again")


def remote_url(name: str = "lab") -> str:
    """The remote's URL as DVC resolves it (``--local`` overrides included)."""
    out = subprocess.run(["dvc", "remote", "list"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            return parts[1]
    raise SystemExit(f"no DVC remote named {name!r} in .dvc/config; {HINT}")


def main() -> int:
    """Pull ``data.dvc``; exit 1 with a one-line message when the remote is unreachable."""
    url = remote_url()
    local = "://" not in url
    if local:
        path = (Path(".dvc") / url).resolve() if not Path(url).is_absolute() else Path(url)
        if not path.is_dir():
            print(f"error: the DVC remote 'lab' ({path}) is not reachable; {HINT}",
                  file=sys.stderr)
            return 1
    result = subprocess.run(["dvc", "pull", "data.dvc"], capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        print(f"error: `dvc pull` from remote 'lab' ({url}) failed ({reason}); {HINT}",
              file=sys.stderr)
        return 1
    print(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "data up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
