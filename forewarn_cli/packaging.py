"""Build the deployment package: Chalice's zip and template, merged with `infra/`.

Chalice zips only `app.py`, `chalicelib/` and `vendor/`. The notice templates live in
`templates/` at the top of the project, so the build stages a copy of the project with
`templates/` placed at `chalicelib/templates/`, where `chalicelib.notices` looks first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
INFRA_DIR = PROJECT_DIR / "infra"
PACKAGED_TEMPLATES = Path("chalicelib") / "templates"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache")


def merge_template() -> dict[str, Any]:
    """`infra/forewarn.json` plus the overlay that adjusts Chalice's own resources."""
    merged: dict[str, Any] = json.loads((INFRA_DIR / "forewarn.json").read_text())
    overlay = json.loads((INFRA_DIR / "chalice-overlay.json").read_text())
    for section, entries in overlay.items():
        merged.setdefault(section, {}).update(entries)
    return merged


def stage_project(target: Path) -> Path:
    """Copy what the Lambda functions need into `target`, templates inside chalicelib."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("app.py", "requirements.txt"):
        shutil.copy2(PROJECT_DIR / name, target / name)
    shutil.copytree(PROJECT_DIR / "chalicelib", target / "chalicelib", ignore=_IGNORE)
    if (PROJECT_DIR / "vendor").is_dir():
        shutil.copytree(PROJECT_DIR / "vendor", target / "vendor", ignore=_IGNORE)
    shutil.copytree(PROJECT_DIR / "templates", target / PACKAGED_TEMPLATES, dirs_exist_ok=True)
    (target / ".chalice").mkdir(exist_ok=True)
    shutil.copy2(PROJECT_DIR / ".chalice" / "config.json", target / ".chalice" / "config.json")
    return target


def _sync_cache(source: Path, target: Path) -> None:
    """Chalice caches downloaded dependencies per requirements hash; keep them between builds."""
    if not source.is_dir():
        return
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.zip"):
        if not (target / path.name).exists():
            shutil.copy2(path, target / path.name)


def build_package(stage: str, out: Path) -> Path:
    out = out.resolve()
    cache = PROJECT_DIR / ".chalice" / "deployments"
    with tempfile.TemporaryDirectory(prefix="forewarn-package-") as tmp:
        staged = stage_project(Path(tmp) / "forewarn")
        _sync_cache(cache, staged / ".chalice" / "deployments")
        merge_file = Path(tmp) / "merge.json"
        merge_file.write_text(json.dumps(merge_template(), indent=2))
        if out.exists():
            shutil.rmtree(out)
        chalice = Path(sys.executable).parent / "chalice"
        subprocess.run(  # noqa: S603 - fixed arguments, our own venv's chalice
            [
                str(chalice),
                "package",
                "--stage",
                stage,
                "--merge-template",
                str(merge_file),
                str(out),
            ],
            cwd=staged,
            check=True,
            # Packaging makes no AWS calls, but chalice insists on knowing a region.
            env={"AWS_DEFAULT_REGION": "us-east-1", **os.environ},
        )
        _sync_cache(staged / ".chalice" / "deployments", cache)
    return out / "deployment.zip"
