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

Chalice declares the runtime of the Python that runs it, so the build first checks that
Lambda offers that runtime and that the wheelhouse was made for it, and afterwards that the
template says so. It then adds each module's compiled bytecode to the zip: Lambda's file
system is read-only, so without it every cold start compiles every module it imports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

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
# The Python runtimes of Lambda that a package may declare. Chalice names the one of the
# Python running it whether Lambda has it or not (older than 3.10 become python3.10, newer
# than 3.14 python3.15), so the build checks.
LAMBDA_PYTHON_RUNTIMES = ("python3.10", "python3.11", "python3.12", "python3.13")
# The legacy manylinux names, by the glibc minor they stand for.
_LEGACY_MANYLINUX = {"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}
# Where Lambda unpacks the zip: the file name each compiled module records for tracebacks.
LAMBDA_TASK_ROOT = "/var/task"


class PackagingError(Exception):
    """The package cannot be built as asked; the message, one line, says why and what to do."""


class WheelhouseError(PackagingError):
    """The wheelhouse is missing, stale, or cannot be filled; the message says what to do."""


class RuntimeMismatch(PackagingError):
    """The Lambda runtime is one Lambda does not offer, or not this Python's."""


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

    def loads_wheel(self, filename: str) -> bool:
        """Whether the wheel named `filename` (`name-1.0-cp311-abi3-manylinux_2_17_x86_64.whl`)
        loads on this runtime and architecture: one of its tags is one the runtime supports."""
        return not parse_wheel_filename(filename)[3].isdisjoint(self.supported_tags())

    def supported_tags(self) -> frozenset[Tag]:
        """The wheel tags this runtime loads, as pip would list them on Lambda itself: its
        CPython ABI, the stable ABI of earlier versions, pure Python, and manylinux up to
        the glibc the runtime has."""
        version = (3, int(self.abi[3:]))
        machine = _MACHINES[self.architecture]
        glibc = _RUNTIME_GLIBC_MINOR.get(self.runtime, 26)
        platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(glibc, 4, -1)] + [
            f"{legacy}_{machine}" for legacy, minor in _LEGACY_MANYLINUX.items() if minor <= glibc
        ]
        return frozenset(
            [
                *cpython_tags(version, platforms=platforms),
                *compatible_tags(version, platforms=platforms),
            ]
        )

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


def this_python() -> str:
    """The runtime name of the Python running this (`python3.11`)."""
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def check_runtime(target: LambdaTarget) -> None:
    """Stop unless Lambda offers the runtime Chalice will declare, and it is this Python's:
    the bytecode added to the zip is this Python's, and loads on that version only."""
    if target.runtime not in LAMBDA_PYTHON_RUNTIMES:
        raise RuntimeMismatch(
            f"Chalice would declare the Lambda runtime {target.runtime}, from the Python that "
            f"runs it ({sys.executable}), and Lambda offers "
            f"{', '.join(LAMBDA_PYTHON_RUNTIMES)}: make .venv with one of those "
            "(`make clean`, then `make package PYTHON=python3.12`)"
        )
    if target.runtime != this_python():
        raise RuntimeMismatch(
            f"Chalice would declare {target.runtime} but this is {this_python()} "
            f"({sys.executable}): package with the Python of the runtime"
        )


def check_template_runtime(template: dict[str, Any], target: LambdaTarget) -> None:
    """Stop unless every function of the template Chalice wrote declares `target`'s runtime,
    one that Lambda offers (`check_runtime` judged what Chalice would write; this, what it
    wrote)."""
    default = template.get("Globals", {}).get("Function", {}).get("Runtime")
    declared = {
        logical: resource.get("Properties", {}).get("Runtime", default)
        for logical, resource in template.get("Resources", {}).items()
        if resource.get("Type") in {"AWS::Serverless::Function", "AWS::Lambda::Function"}
    }
    wrong = sorted(
        f"{logical} ({runtime})"
        for logical, runtime in declared.items()
        if runtime != target.runtime or runtime not in LAMBDA_PYTHON_RUNTIMES
    )
    if not declared or wrong:
        raise RuntimeMismatch(
            f"the template Chalice wrote gives functions a runtime other than {target.runtime}, "
            f"the one the package was built for and Lambda offers: "
            f"{', '.join(wrong) or 'it has no function at all'}"
        )


def check_wheelhouse(target: LambdaTarget) -> None:
    """Stop unless every wheel in the target's wheelhouse loads on its runtime and
    architecture (a wheelhouse copied in from elsewhere, or renamed)."""
    foreign = sorted(
        wheel.name
        for wheel in target.wheelhouse.glob("*.whl")
        if not target.loads_wheel(wheel.name)
    )
    if foreign:
        raise WheelhouseError(
            f"{shown(target.wheelhouse)} holds wheels that do not load on {target.runtime} "
            f"{target.architecture} ({', '.join(foreign)}): run "
            f"`rm -rf {shown(target.wheelhouse)} && make wheelhouse`"
        )


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
    check_runtime(target)
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
    check_wheelhouse(target)
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
    check_runtime(target)
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
    check_template_runtime(json.loads((out / "sam.json").read_text()), target)
    add_bytecode(out / "deployment.zip")
    return out / "deployment.zip"


# Compiles the modules named on stdin (JSON) under argv[1], each to `<module>.pyc` beside
# it; prints the ones that do not compile, with why (JSON).
_COMPILE = """
import json, py_compile, sys
root, task_root = sys.argv[1:3]
failed = {}
for name in json.load(sys.stdin):
    try:
        py_compile.compile(
            f"{root}/{name}",
            cfile=f"{root}/{name}c",
            dfile=f"{task_root}/{name}",
            doraise=True,
            optimize=0,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    except py_compile.PyCompileError as exc:
        failed[name] = " ".join(exc.msg.split()[-20:])
json.dump(failed, sys.stdout)
"""


def add_bytecode(archive: Path) -> list[str]:
    """Add `__pycache__/<module>.<cache tag>.pyc` beside every `.py` in the zip, compiled by
    this Python (the runtime's: `check_runtime`). Returns the modules that do not compile,
    which Python could not import anyway, and names them on stderr.

    The .pyc files are unchecked-hash ones: Lambda unpacks the zip with file times of its own,
    against which a timestamp .pyc could be judged stale and compiled again on every cold
    start, and the file system is read-only, so Python cannot write the result down for the
    next one. Entries are added in name order with the time and permissions of their source,
    so the same sources still give the same zip, byte for byte, as Chalice makes it.

    The compiling is done by a fresh interpreter: marshal marks an object it may refer back
    to by its reference count, so the same module compiled in a process that has imported
    things (a test run) can differ by a few bits from one compiled in a new one. Its
    name, optimisation level and file name are spelled out, and its environment is fixed:
    PYTHONPYCACHEPREFIX, -O or a hash seed here must not change what Lambda loads."""
    with zipfile.ZipFile(archive) as zipped:
        sources = {info.filename: info for info in zipped.infolist()}
        modules = sorted(name for name in sources if name.endswith(".py"))
        with tempfile.TemporaryDirectory(prefix="forewarn-bytecode-") as tmp:
            for name in modules:
                zipped.extract(name, tmp)
            result = subprocess.run(  # noqa: S603 - our own interpreter, fixed script
                [sys.executable, "-s", "-c", _COMPILE, tmp, LAMBDA_TASK_ROOT],
                input=json.dumps(modules),
                capture_output=True,
                text=True,
                check=True,
                env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"},
            )
            failed: dict[str, str] = json.loads(result.stdout)
            compiled = {
                name: (Path(tmp) / f"{name}c").read_bytes()
                for name in modules
                if name not in failed
            }
    tag = sys.implementation.cache_tag
    with zipfile.ZipFile(archive, "a") as zipped:
        for name, data in compiled.items():
            directory, _, module = name.rpartition("/")
            cached = f"{directory}/__pycache__" if directory else "__pycache__"
            _add_like(zipped, sources[name], f"{cached}/{module[:-3]}.{tag}.pyc", data)
    for name, reason in failed.items():
        print(f"not compiled (no import on {this_python()}): {name}: {reason}", file=sys.stderr)
    return sorted(failed)


def _add_like(zipped: zipfile.ZipFile, source: zipfile.ZipInfo, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=source.date_time)
    info.external_attr = source.external_attr
    info.create_system = source.create_system
    info.compress_type = zipfile.ZIP_DEFLATED
    zipped.writestr(info, data)


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
