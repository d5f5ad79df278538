"""Build the deployment package: Chalice's zip and template, merged with `infra/`, offline.

The package step reaches no network. What the functions import comes from a local
wheelhouse, filled once (online) per runtime, architecture and requirements.txt:

- `fill_wheelhouse` (`make wheelhouse`) downloads every wheel that requirements.txt needs for
  the runtime and architecture Chalice targets: manylinux wheels for the compiled projects
  (glibc no newer than the Lambda runtime's), pure-Python wheels for the rest, a pure wheel
  built here from the sdist for a project that publishes none. It lands in
  `wheelhouse/<runtime>-<architecture>/`, with a copy of the requirements.txt it was made for.
- `build_package` installs those wheels with `pip install --no-index` into the staged project's
  `vendor/`, which Chalice zips as it is. The staged project has no requirements.txt, so
  Chalice's own dependency builder (which runs `pip download`) never runs.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
INFRA_DIR = PROJECT_DIR / "infra"
REQUIREMENTS = PROJECT_DIR / "requirements.txt"
WHEELHOUSE_DIR = PROJECT_DIR / "wheelhouse"
PACKAGED_TEMPLATES = Path("chalicelib") / "templates"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache")

# The glibc of each Lambda Python runtime: Amazon Linux 2 up to python3.11, Amazon Linux 2023
# from python3.12 (the same table as Chalice's dependency builder).
_RUNTIME_GLIBC_MINOR = {
    "python3.10": 26,
    "python3.11": 26,
    "python3.12": 34,
    "python3.13": 34,
    "python3.14": 34,
}
_MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}


class WheelhouseError(Exception):
    """The wheelhouse is missing, stale, or cannot be filled; the message says what to do."""


@dataclass(frozen=True)
class LambdaTarget:
    """The runtime (`python3.11`) and architecture (`x86_64`, `arm64`) the functions run on."""

    runtime: str
    architecture: str

    @property
    def python_version(self) -> str:
        return self.runtime.removeprefix("python")

    @property
    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    @property
    def platforms(self) -> list[str]:
        """Every manylinux tag the runtime loads. pip takes `--platform` literally, so each
        glibc minor from 2.17 (manylinux2014) up to the runtime's is listed, and the legacy
        alias brings in manylinux1 and manylinux2010."""
        machine = _MACHINES[self.architecture]
        newest = _RUNTIME_GLIBC_MINOR.get(self.runtime, 26)
        tags = [f"manylinux_2_{minor}_{machine}" for minor in range(17, newest + 1)]
        return [*tags, f"manylinux2014_{machine}"]

    @property
    def wheelhouse(self) -> Path:
        return WHEELHOUSE_DIR / f"{self.runtime}-{self.architecture}"

    def pip_options(self) -> list[str]:
        """pip's options to choose wheels for this target rather than for this machine."""
        options = ["--only-binary=:all:", "--implementation", "cp"]
        options += ["--python-version", self.python_version, "--abi", self.abi]
        for platform in self.platforms:
            options += ["--platform", platform]
        return options


def lambda_target(stage: str) -> LambdaTarget:
    """What `chalice package` will declare for `stage`: the runtime matches the Python that
    runs Chalice (this one), the architecture comes from `.chalice/config.json`."""
    from chalice.config import Config

    config = Config(
        chalice_stage=stage,
        config_from_disk=json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text()),
    )
    return LambdaTarget(config.lambda_python_version, config.lambda_architecture)


def wheelhouse_is_current(target: LambdaTarget) -> bool:
    """True when the target's wheelhouse was filled for the requirements.txt of now."""
    made_for = target.wheelhouse / "requirements.txt"
    return made_for.is_file() and made_for.read_bytes() == REQUIREMENTS.read_bytes()


def shown(path: Path) -> str:
    """`path` relative to the project when it is inside it, for messages."""
    return str(path.relative_to(PROJECT_DIR) if path.is_relative_to(PROJECT_DIR) else path)


def platform_wheels(directory: Path) -> list[str]:
    """The wheels in `directory` built for one platform (compiled code), by file name."""
    return sorted(p.name for p in directory.glob("*.whl") if not p.stem.endswith("-none-any"))


def fill_wheelhouse(target: LambdaTarget, *, force: bool = False) -> bool:
    """Download the wheels requirements.txt needs on `target` (online). Returns False, having
    done nothing, when the wheelhouse is already current and `force` is not given."""
    if wheelhouse_is_current(target) and not force:
        return False
    WHEELHOUSE_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".filling-", dir=WHEELHOUSE_DIR) as tmp:
        fresh = Path(tmp) / "wheels"
        download = [*_pip("download"), "-r", str(REQUIREMENTS), "--dest", str(fresh)]
        download += target.pip_options()
        first = _run(download)
        if first.returncode != 0:
            # A project that publishes only an sdist: build its wheel here, and keep it if it
            # is pure Python (a compiled one built here would not load on Lambda anyway).
            built = Path(tmp) / "built"
            _run([*_pip("wheel"), "-r", str(REQUIREMENTS), "--wheel-dir", str(built)])
            second = _run([*download, "--find-links", str(built)])
            if second.returncode != 0:
                raise WheelhouseError(
                    f"cannot fill {target.wheelhouse} from PyPI: some requirement has no wheel "
                    f"for {target.runtime} on manylinux {target.architecture} and is not pure "
                    f"Python, or PyPI cannot be reached.\n{_tail(second.stderr)}"
                )
        shutil.copy2(REQUIREMENTS, fresh / "requirements.txt")
        if target.wheelhouse.exists():
            shutil.rmtree(target.wheelhouse)
        fresh.rename(target.wheelhouse)
    return True


def install_wheelhouse(target: LambdaTarget, vendor: Path) -> None:
    """Install requirements.txt from the wheelhouse alone into `vendor/`: no index, and none
    of pip's configuration files or `PIP_*` variables (extra indexes, find-links)."""
    if not wheelhouse_is_current(target):
        state = "stale" if target.wheelhouse.is_dir() else "missing"
        raise WheelhouseError(
            f"the wheelhouse for {target.runtime} {target.architecture} is {state} "
            f"({shown(target.wheelhouse)} does not match requirements.txt): "
            "run `make wheelhouse` once with access to PyPI, then package offline"
        )
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}
    command = [*_pip("install"), "--no-index", "--find-links", str(target.wheelhouse)]
    command += ["--target", str(vendor), "--no-compile", "-r", str(REQUIREMENTS)]
    result = _run([*command, *target.pip_options()], env=env)
    if result.returncode != 0:
        raise WheelhouseError(
            f"installing from {shown(target.wheelhouse)} failed:\n{_tail(result.stderr)}"
        )
    # Console scripts (`bin/`) are of no use to a Lambda function.
    shutil.rmtree(vendor / "bin", ignore_errors=True)


def merge_template() -> dict[str, Any]:
    """`infra/forewarn.json` plus the overlay that adjusts Chalice's own resources."""
    merged: dict[str, Any] = json.loads((INFRA_DIR / "forewarn.json").read_text())
    overlay = json.loads((INFRA_DIR / "chalice-overlay.json").read_text())
    for section, entries in overlay.items():
        merged.setdefault(section, {}).update(entries)
    return merged


def stage_project(directory: Path, target: LambdaTarget) -> Path:
    """Copy what the Lambda functions need into `directory`: the code, the templates inside
    chalicelib, and the dependencies installed from the wheelhouse into `vendor/`."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy2(PROJECT_DIR / "app.py", directory / "app.py")
    shutil.copytree(PROJECT_DIR / "chalicelib", directory / "chalicelib", ignore=_IGNORE)
    if (PROJECT_DIR / "vendor").is_dir():
        shutil.copytree(PROJECT_DIR / "vendor", directory / "vendor", ignore=_IGNORE)
    install_wheelhouse(target, directory / "vendor")
    shutil.copytree(PROJECT_DIR / "templates", directory / PACKAGED_TEMPLATES, dirs_exist_ok=True)
    (directory / ".chalice").mkdir(exist_ok=True)
    config = directory / ".chalice" / "config.json"
    shutil.copy2(PROJECT_DIR / ".chalice" / "config.json", config)
    # Each function's IAM policy (config.json's `iam_policy_file`), read by `chalice package`.
    for policy in sorted((PROJECT_DIR / ".chalice").glob("policy-*.json")):
        shutil.copy2(policy, directory / ".chalice" / policy.name)
    return directory


def build_package(stage: str, out: Path) -> Path:
    """Write `out/deployment.zip` and `out/sam.json` for `stage`, without the network."""
    out = out.resolve()
    target = lambda_target(stage)
    with tempfile.TemporaryDirectory(prefix="forewarn-package-") as tmp:
        staged = stage_project(Path(tmp) / "forewarn", target)
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
    return out / "deployment.zip"


def _pip(command: str) -> list[str]:
    return [sys.executable, "-m", "pip", command, "--disable-pip-version-check", "--quiet"]


def _run(
    command: Sequence[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter's pip, fixed options
        list(command), capture_output=True, text=True, check=False, env=env
    )


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
