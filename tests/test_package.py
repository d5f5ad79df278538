"""The deployment package: built with the network blocked, from the wheelhouse alone, it
carries everything the functions read at run time and fits Lambda's limits. `make deploy`
checks its bucket, the AWS CLI and the credentials before it builds or uploads anything."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from forewarn_cli import packaging
from forewarn_cli.packaging import (
    LAMBDA_PYTHON_RUNTIMES,
    PROJECT_DIR,
    LambdaTarget,
    RuntimeMismatch,
    WheelhouseError,
    build_package,
    lambda_target,
)

pytestmark = pytest.mark.package

LAMBDA_ZIP_LIMIT = 50 * 1024 * 1024
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
# Nothing listens on the discard port: a proxy there refuses every request.
CLOSED_PROXY = "http://127.0.0.1:9"

# Loaded by every Python process of a blocked run (the CLI, pip, chalice) through PYTHONPATH:
# any name lookup or connection is written down and refused.
NETWORK_GUARD = """
import errno, os, socket

def _refuse(what):
    def refuse(*args, **kwargs):
        with open(os.environ["FOREWARN_NETWORK_LOG"], "a") as log:
            log.write(f"{what} {args!r}\\n")
        raise OSError(errno.ENETUNREACH, "network blocked by the offline packaging test")
    return refuse

socket.getaddrinfo = _refuse("getaddrinfo")
socket.socket.connect = _refuse("connect")
socket.socket.connect_ex = _refuse("connect_ex")
"""


def _unshare() -> list[str]:
    """`unshare --net`: a network namespace with no interface up, where root (or a user
    namespace) allows it; the guard and the closed proxies apply either way."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    command = [unshare, "--net", "--map-root-user"]
    probe = subprocess.run([*command, "true"], capture_output=True, check=False)
    return command if probe.returncode == 0 else []


@dataclass(frozen=True)
class Offline:
    """Runs commands with the network blocked, and keeps what they tried to reach."""

    log: Path
    env: dict[str, str]
    wrapper: list[str]

    @classmethod
    def at(cls, directory: Path) -> Offline:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "sitecustomize.py").write_text(NETWORK_GUARD)
        log = directory / "network.log"
        env = {
            **os.environ,
            "PYTHONPATH": str(directory),
            "FOREWARN_NETWORK_LOG": str(log),
            "PIP_NO_INDEX": "1",
            **{name: CLOSED_PROXY for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy")},
            "https_proxy": CLOSED_PROXY,
            "NO_PROXY": "",
            "no_proxy": "",
        }
        return cls(log, env, _unshare())

    def run(self, command: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.wrapper, *command],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )

    def attempts(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@dataclass(frozen=True)
class Build:
    result: subprocess.CompletedProcess[str]
    out: Path
    offline: Offline


@pytest.fixture(scope="module")
def offline_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    # The one online step, before the block: nothing happens when wheelhouse/ already
    # matches requirements.txt (`make wheelhouse` filled it).
    packaging.fill_wheelhouse(lambda_target("dev"))
    root = tmp_path_factory.mktemp("package")
    offline = Offline.at(root / "guard")
    forewarn = Path(sys.executable).parent / "forewarn"
    result = offline.run(
        [str(forewarn), "package", "--stage", "dev", "--out", str(root / "dev")], cwd=root
    )
    return Build(result, root / "dev", offline)


@pytest.fixture(scope="module")
def package(offline_build: Build) -> Path:
    assert offline_build.result.returncode == 0, offline_build.result.stderr[-4000:]
    return offline_build.out


@pytest.fixture(scope="module")
def unpacked(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("unpacked") / "task"
    zipfile.ZipFile(package / "deployment.zip").extractall(directory)
    return directory


def _run_isolated(probe: str, unpacked: Path) -> subprocess.CompletedProcess[str]:
    # -S: no site-packages, so neither the source tree (installed editable) nor the
    # development environment's libraries can stand in for what the zip carries.
    return subprocess.run(
        [sys.executable, "-S", "-c", probe, str(unpacked)],
        cwd=unpacked,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(unpacked)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_package_builds_with_the_network_blocked(offline_build: Build) -> None:
    result = offline_build.result
    assert result.returncode == 0, result.stderr[-4000:]
    assert offline_build.offline.attempts() == []
    assert "package written to" in result.stdout
    assert (offline_build.out / "deployment.zip").is_file()
    assert (offline_build.out / "sam.json").is_file()


def test_the_network_block_refuses_a_download(tmp_path: Path) -> None:
    # What makes the build's empty log mean something: the same block stops a real fetch.
    offline = Offline.at(tmp_path / "guard")
    fetch = "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/', timeout=10)"
    result = offline.run([sys.executable, "-c", fetch], cwd=tmp_path)
    assert result.returncode != 0
    assert any("pypi.org" in attempt or "127.0.0.1" in attempt for attempt in offline.attempts())


def test_a_stale_or_missing_wheelhouse_stops_the_package_and_says_how_to_fill_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(packaging, "WHEELHOUSE_DIR", tmp_path / "wheelhouse")
    with pytest.raises(WheelhouseError, match=r"is missing .*run `make wheelhouse`"):
        build_package("dev", tmp_path / "out")
    wheelhouse = lambda_target("dev").wheelhouse
    wheelhouse.mkdir(parents=True)
    (wheelhouse / "requirements.txt").write_text("jinja2==2.0\n")
    with pytest.raises(WheelhouseError, match=r"is stale .*run `make wheelhouse`"):
        build_package("dev", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# The newest glibc each Lambda runtime has (Amazon Linux 2, then 2023), and the machine name
# in wheel tags for each architecture; the legacy manylinux names and their glibc.
LAMBDA_GLIBC = {"python3.11": 26, "python3.12": 34, "python3.13": 34, "python3.14": 34}
WHEEL_MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}
LEGACY_MANYLINUX = {"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}


def _loadable_on_lambda(tag: str, target: packaging.LambdaTarget) -> bool:
    """Whether a wheel tag (`cp311-abi3-manylinux_2_17_x86_64`) loads on the target runtime."""
    python, abi, platforms = tag.split("-")
    if platforms == "any":
        return abi == "none"
    if abi == "abi3":
        if not python.startswith("cp3") or int(python[3:]) > int(target.abi[3:]):
            return False
    elif abi not in {target.abi, "none"}:
        return False
    machine = WHEEL_MACHINE[target.architecture]
    for platform in platforms.split("."):
        perennial = re.fullmatch(rf"manylinux_2_(\d+)_{machine}", platform)
        name, _, arch = platform.partition("_")
        glibc = int(perennial.group(1)) if perennial else LEGACY_MANYLINUX.get(name, 99)
        if arch.endswith(machine) and glibc <= LAMBDA_GLIBC[target.runtime]:
            return True
    return False


def test_every_library_in_the_zip_was_built_for_the_lambda_runtime(package: Path) -> None:
    target = lambda_target("dev")
    archive = zipfile.ZipFile(package / "deployment.zip")
    wheels = {
        name.split("/")[0]: archive.read(name).decode()
        for name in archive.namelist()
        if re.fullmatch(r"[^/]+\.dist-info/WHEEL", name)
    }
    compiled = set()
    for dist, metadata in wheels.items():
        tags = [line[5:].strip() for line in metadata.splitlines() if line.startswith("Tag: ")]
        assert any(_loadable_on_lambda(tag, target) for tag in tags), (dist, tags)
        if not all(tag.endswith("-none-any") for tag in tags):
            compiled.add(dist.split("-")[0].lower())
    # jinja2's markupsafe and PyJWT[crypto]'s cryptography are compiled: their manylinux builds.
    assert {"markupsafe", "cryptography"} <= compiled
    machine = WHEEL_MACHINE[target.architecture]
    extension = re.compile(rf"\.(cpython-{target.abi[2:]}-{machine}-linux-gnu|abi3)\.so$")
    for name in archive.namelist():
        if name.endswith(".so"):
            assert extension.search(name), name
    assert not any(name.startswith("bin/") for name in archive.namelist())
    # The only bytecode is what the build compiled for the runtime, beside its source.
    cache_tag = f"cpython-{target.abi[2:]}"
    for name in archive.namelist():
        if name.endswith(".pyc"):
            match = re.fullmatch(rf"((?:.+/)?)__pycache__/([^/]+)\.{cache_tag}\.pyc", name)
            assert match, name
            assert f"{match.group(1)}{match.group(2)}.py" in archive.namelist(), name


def test_every_dependency_imports_from_the_zip_alone(unpacked: Path) -> None:
    modules = [
        "jinja2",
        "markupsafe._speedups",
        "phonenumbers",
        "email_validator",
        "jwt",
        "cryptography.hazmat.primitives.asymmetric.rsa",
        "vaderSentiment.vaderSentiment",
        "tweepy",
        "feedparser",
    ]
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(sys.argv[1]), (name, module.__file__)\n"
        "print('ok')"
    )
    result = _run_isolated(probe, unpacked)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_template_is_inside_the_zip(package: Path) -> None:
    names = set(zipfile.ZipFile(package / "deployment.zip").namelist())
    # Notice templates, the console's pages and its static files alike.
    templates = [p for p in (PROJECT_DIR / "templates").rglob("*") if p.is_file()]
    assert any(p.suffix == ".css" for p in templates)
    for template in templates:
        relative = template.relative_to(PROJECT_DIR / "templates").as_posix()
        assert f"chalicelib/templates/{relative}" in names, relative
    assert {"app.py", "chalicelib/notices.py", "jinja2/__init__.py"} <= names


def test_the_package_renders_notices_without_the_source_tree(unpacked: Path) -> None:
    probe = (
        "import sys; from chalicelib import notices; "
        "from chalicelib.domain import Channel; "
        "assert all(d.startswith(sys.argv[1]) for d in notices.template_dirs()), "
        "notices.template_dirs(); "
        "import jinja2; assert jinja2.__file__.startswith(sys.argv[1]); "
        "print(notices.render_notice('outage_resolved', Channel.SMS, 'fr-CA', "
        "{'brand': 'B', 'first_name': 'Ana', 'name': 'Ana', 'title': 'T', 'status': 'resolved', "
        "'service': 'mobile', 'region': 'north', 'workaround': '', 'status_link': '', "
        "'next_update': '', 'opt_out_sms': 'STOP', 'unsubscribe_url': None}).text)"
    )
    result = _run_isolated(probe, unpacked)
    assert result.returncode == 0, result.stderr
    assert "mobile" in result.stdout


def test_the_package_carries_the_maintenance_heads_up_and_shows_its_window_locally(
    unpacked: Path,
) -> None:
    # Status sources send a heads-up only when the kind is available in the package itself.
    probe = (
        "import sys; from chalicelib import notices; "
        "from chalicelib.domain import Channel; "
        "assert 'maintenance_headsup' in notices.available_kinds(), notices.available_kinds(); "
        "window = notices.window_context('2024-03-03T01:00:00Z', '2024-03-03T03:00:00Z', "
        "time_zone='America/New_York', locale='es'); "
        "print(notices.render_notice('maintenance_headsup', Channel.SMS, 'es', "
        "{'brand': 'B', 'first_name': 'Ana', 'name': 'Ana', 'title': 'T', 'status': 'identified', "
        "'service': 'mobile', 'region': 'north', 'workaround': '', 'status_link': '', "
        "'next_update': '', 'opt_out_sms': 'STOP', 'unsubscribe_url': None, **window}).text)"
    )
    result = _run_isolated(probe, unpacked)
    assert result.returncode == 0, result.stderr
    assert "mantenimiento de mobile (north) previsto 02/03 20:00-22:00 EST." in result.stdout


def test_the_package_fits_lambda_limits(package: Path) -> None:
    archive = package / "deployment.zip"
    assert archive.stat().st_size < LAMBDA_ZIP_LIMIT
    unzipped = sum(info.file_size for info in zipfile.ZipFile(archive).infolist())
    assert unzipped < LAMBDA_UNZIPPED_LIMIT


def test_the_template_merges_infra_and_reports_partial_batch_failures(package: Path) -> None:
    template = json.loads((package / "sam.json").read_text())
    resources = template["Resources"]
    assert {"DeliveryQueue", "DeliveriesTable", "SenderIdentity", "DeliverNotices"} <= set(
        resources
    )
    for function in ("DeliverNotices", "DeliverCustomerNotices", "ApplyFeedback"):
        events = resources[function]["Properties"]["Events"]
        sqs = events[f"{function}SqsEventSource"]["Properties"]
        assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"], function


def test_the_sentiment_lexicons_are_inside_the_zip(package: Path) -> None:
    names = set(zipfile.ZipFile(package / "deployment.zip").namelist())
    assert "chalicelib/lexicons/complaints.json" in names
    assert "vaderSentiment/vader_lexicon.txt" in names


def test_every_function_learns_the_ops_topic_and_x_secret_from_the_template(
    package: Path,
) -> None:
    template = json.loads((package / "sam.json").read_text())
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["OPS_TOPIC_ARN"] == {"Ref": "OpsTopic"}
    assert variables["X_SECRET_ID"] == {"Ref": "XCredentials"}
    assert template["Resources"]["ScanSocialFeeds"]["Type"] == "AWS::Serverless::Function"


# -- who may sign in: the user pool, or the dev stage's own key -------------------------------

COGNITO_ISSUER = {"Fn::Sub": "https://cognito-idp.${AWS::Region}.amazonaws.com/${ConsoleUserPool}"}
DEV_TOKEN_KEY = {
    "Fn::If": [
        "IsDevStage",
        {"Fn::Sub": "{{resolve:secretsmanager:${DevTokenKey}}}"},
        {"Ref": "AWS::NoValue"},
    ]
}
AUTH_VARIABLES = {"COGNITO_ISSUER", "COGNITO_CLIENT_ID", "FOREWARN_TOKEN_SECRET"}


def _token_checkers() -> set[str]:
    """The functions that verify tokens: the API (console sign-in and sessions) and each
    authorizer of its routes."""
    from chalice.utils import to_cfn_resource_name

    import app as forewarn_app

    authorizers = {to_cfn_resource_name(c.name) for c in forewarn_app.app.builtin_auth_handlers}
    return {"APIHandler", *authorizers}


def test_the_functions_that_check_tokens_learn_the_user_pool_from_the_template(
    package: Path,
) -> None:
    template = json.loads((package / "sam.json").read_text())
    functions = {
        logical: resource["Properties"]
        for logical, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    checkers = _token_checkers()
    assert checkers == {"APIHandler", "Bearer"}
    for logical, props in functions.items():
        variables = props["Environment"]["Variables"]
        if logical in checkers:
            # The pool's own region and ids, known when the stack is made: one deploy.
            assert variables["COGNITO_ISSUER"] == COGNITO_ISSUER, logical
            assert variables["COGNITO_CLIENT_ID"] == {"Ref": "ConsoleUserPoolClient"}, logical
            assert variables["FOREWARN_TOKEN_SECRET"] == DEV_TOKEN_KEY, logical
        else:
            assert not AUTH_VARIABLES & set(variables), logical
    assert not AUTH_VARIABLES & set(template["Globals"]["Function"]["Environment"]["Variables"])
    resources = template["Resources"]
    assert resources["ConsoleUserPool"]["Type"] == "AWS::Cognito::UserPool"
    assert resources["DevTokenKey"]["Condition"] == "IsDevStage"
    assert template["Conditions"]["IsDevStage"] == {"Fn::Equals": [{"Ref": "Stage"}, "dev"]}


def test_no_stage_names_a_user_pool_or_a_region_in_its_settings() -> None:
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    text = json.dumps(config)
    assert "REPLACE_WITH" not in text
    assert "cognito-idp" not in text
    stages = config["stages"]
    for name, stage in stages.items():
        assert not AUTH_VARIABLES & set(stage.get("environment_variables", {})), name
    # The template makes the dev stage's key when Stage is `dev`: that must be the one stage
    # whose tokens are local ones.
    local = {n for n, s in stages.items() if s["environment_variables"]["AUTH_MODE"] == "local"}
    assert local == {"dev"}
    assert stages["prod"]["environment_variables"]["AUTH_MODE"] == "cognito"


# -- the Lambda runtime --------------------------------------------------------------------------


def test_the_template_declares_the_runtime_of_this_python_which_lambda_offers(
    package: Path,
) -> None:
    template = json.loads((package / "sam.json").read_text())
    runtimes = {
        resource["Properties"]["Runtime"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    this = f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert runtimes == {lambda_target("dev").runtime} == {this}
    assert this in LAMBDA_PYTHON_RUNTIMES


def _other_runtime() -> str:
    this = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return next(runtime for runtime in LAMBDA_PYTHON_RUNTIMES if runtime != this)


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        ("python3.14", r"Lambda runtime python3\.14, .* Lambda offers python3\.10, python3\.11"),
        ("python3.9", r"Lambda runtime python3\.9, .* make \.venv with one of those"),
        (_other_runtime(), r"Chalice would declare python3\.\d+ but this is python3\.\d+"),
    ],
)
def test_a_runtime_lambda_lacks_or_not_this_pythons_stops_the_package_in_one_line(
    runtime: str, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from forewarn_cli.main import cli

    monkeypatch.setattr(packaging, "lambda_target", lambda stage: LambdaTarget(runtime, "x86_64"))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["package", "--stage", "dev", "--out", str(out)])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert re.search(message, line), line
    assert not out.exists()
    # The wheelhouse is not filled for it either.
    result = CliRunner().invoke(cli, ["package", "--stage", "dev", "--wheelhouse-only"])
    assert result.exit_code == 1
    assert re.search(message, result.output), result.output


def test_a_template_with_another_runtime_than_the_packages_is_refused() -> None:
    target = lambda_target("dev")

    def written(bearer: dict[str, str]) -> dict[str, Any]:
        return {
            "Globals": {"Function": {"Runtime": target.runtime}},
            "Resources": {
                "APIHandler": {"Type": "AWS::Serverless::Function", "Properties": {}},
                "Bearer": {"Type": "AWS::Serverless::Function", "Properties": bearer},
            },
        }

    with pytest.raises(RuntimeMismatch, match=r"Bearer \(python3\.9\)") as refused:
        packaging.check_template_runtime(written({"Runtime": "python3.9"}), target)
    assert "APIHandler" not in str(refused.value)
    packaging.check_template_runtime(written({}), target)
    with pytest.raises(RuntimeMismatch, match="no function at all"):
        packaging.check_template_runtime({"Resources": {}}, target)


def test_a_wheelhouse_made_for_another_runtime_stops_the_package_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(packaging, "WHEELHOUSE_DIR", tmp_path / "wheelhouse")
    target = lambda_target("dev")
    target.wheelhouse.mkdir(parents=True)
    shutil.copy2(PROJECT_DIR / "requirements.txt", target.wheelhouse / "requirements.txt")
    # Current for requirements.txt, but one wheel was built for another CPython.
    other = f"cp3{int(target.abi[3:]) + 1}"
    foreign = f"markupsafe-3.0.2-{other}-{other}-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    (target.wheelhouse / foreign).write_bytes(b"")
    (target.wheelhouse / "jinja2-3.1.6-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(WheelhouseError) as refused:
        build_package("dev", tmp_path / "out")
    (line,) = str(refused.value).splitlines()
    assert f"do not load on {target.runtime} {target.architecture} ({foreign})" in line
    assert "make wheelhouse" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("wheel", "loads"),
    [
        ("jinja2-3.1.6-py3-none-any.whl", True),
        ("six-1.17.0-py2.py3-none-any.whl", True),
        ("cryptography-44.0.0-cp39-abi3-manylinux_2_17_x86_64.whl", True),
        ("cryptography-44.0.0-cp39-abi3-manylinux_2_28_x86_64.whl", False),  # AL2: glibc 2.26
        ("cryptography-44.0.0-cp39-abi3-manylinux_2_17_aarch64.whl", False),
        ("cryptography-44.0.0-cp312-abi3-manylinux_2_17_x86_64.whl", False),
        ("markupsafe-3.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
        ("markupsafe-3.0.2-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", False),
        ("markupsafe-3.0.2-cp311-cp311-musllinux_1_2_x86_64.whl", False),
        ("markupsafe-3.0.2-cp311-cp311-macosx_11_0_arm64.whl", False),
        ("cffi-1.17.1-cp311-cp311-manylinux1_x86_64.whl", True),
    ],
)
def test_which_wheels_load_on_python311_x86_64(wheel: str, loads: bool) -> None:
    assert LambdaTarget("python3.11", "x86_64").loads_wheel(wheel) is loads


def test_every_wheel_of_the_wheelhouse_loads_by_both_judges() -> None:
    target = lambda_target("dev")
    wheels = sorted(target.wheelhouse.glob("*.whl"))
    assert wheels
    for wheel in wheels:
        tags = wheel.name.removesuffix(".whl").split("-")[-3:]
        expanded = [
            f"{python}-{abi}-{platform}"
            for python in tags[0].split(".")
            for abi in tags[1].split(".")
            for platform in tags[2].split(".")
        ]
        assert any(_loadable_on_lambda(tag, target) for tag in expanded), wheel.name
        assert target.loads_wheel(wheel.name), wheel.name


# -- compiled bytecode ---------------------------------------------------------------------------


def test_every_module_in_the_zip_has_unchecked_bytecode_for_the_runtime(package: Path) -> None:
    import importlib.util

    target = lambda_target("dev")
    archive = zipfile.ZipFile(package / "deployment.zip")
    names = set(archive.namelist())
    sources = sorted(name for name in names if name.endswith(".py"))
    assert {"app.py", "chalicelib/broadcasts.py", "jinja2/__init__.py"} <= set(sources)
    assert any(name.startswith("aws_lambda_powertools/") for name in sources)
    for source in sources:
        directory, _, module = source.rpartition("/")
        pyc = f"__pycache__/{module[:-3]}.cpython-{target.abi[2:]}.pyc"
        pyc = f"{directory}/{pyc}" if directory else pyc
        assert pyc in names, source
        data = archive.read(pyc)
        # PEP 552: this Python's magic (the runtime's, as checked), flags 0b01 (hash-based,
        # never checked against the source), then the hash of the very source in the zip.
        assert data[:4] == importlib.util.MAGIC_NUMBER, source
        assert int.from_bytes(data[4:8], "little") == 0b01, source
        assert data[8:16] == importlib.util.source_hash(archive.read(source)), source
        info, source_info = archive.getinfo(pyc), archive.getinfo(source)
        assert (info.date_time, info.external_attr) == (
            source_info.date_time,
            source_info.external_attr,
        )


# The app, and what its handlers import on their first call: the logger (Powertools), the
# notice templates (jinja2) and tokens (PyJWT, cryptography).
BYTECODE_PROBE = (
    "import app, chalicelib.broadcasts, aws_lambda_powertools.logging, jinja2, jwt; "
    "print(chalicelib.broadcasts.__cached__)"
)


def _import_verbosely(tree: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-S", "-v", "-c", BYTECODE_PROBE],
        cwd=tree,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(tree), **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_package_imports_from_its_bytecode_and_compiles_nothing(
    package: Path, tmp_path: Path
) -> None:
    tree = tmp_path / "task"
    zipfile.ZipFile(package / "deployment.zip").extractall(tree)
    before = sorted(p for p in tree.rglob("*"))
    # As on Lambda, where nothing can be written; -v names what each import reads.
    result = _import_verbosely(tree, {"PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    compiled = re.findall(
        rf"^# code object from ({re.escape(str(tree))}/\S+\.py)$", result.stderr, re.MULTILINE
    )
    loaded = re.findall(
        rf"^# ({re.escape(str(tree))}/\S+\.pyc) matches ", result.stderr, re.MULTILINE
    )
    assert compiled == []
    assert f"{tree}/__pycache__/app.cpython-{lambda_target('dev').abi[2:]}.pyc" in loaded
    cached = result.stdout.strip()
    assert cached in loaded
    assert Path(cached).is_file()
    packages = {Path(path).relative_to(tree).parts[0] for path in loaded}
    assert {"chalicelib", "aws_lambda_powertools", "jinja2", "jwt", "cryptography"} <= packages
    assert sorted(p for p in tree.rglob("*")) == before
    # The same probe sees a compile when the bytecode is out of Python's sight: a cache
    # prefix makes it look for .pyc files in an empty directory instead.
    blind = _import_verbosely(
        tree, {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(tmp_path / "empty")}
    )
    assert blind.returncode == 0, blind.stderr[-3000:]
    assert f"# code object from {tree}/app.py" in blind.stderr.splitlines()


def test_a_module_that_does_not_compile_is_named_and_shipped_without_bytecode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "deployment.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("app.py", "VALUE = {'a', 'b'}\n")
        zipped.writestr("pkg/old.py", "print 'python 2'\n")
        zipped.writestr("pkg/data.txt", "not python\n")
    assert packaging.add_bytecode(archive) == ["pkg/old.py"]
    tag = sys.implementation.cache_tag
    names = zipfile.ZipFile(archive).namelist()
    assert names == ["app.py", "pkg/old.py", "pkg/data.txt", f"__pycache__/app.{tag}.pyc"]
    assert "pkg/old.py" in capsys.readouterr().err


def test_the_same_sources_make_the_same_zip_byte_for_byte(package: Path, tmp_path: Path) -> None:
    again = build_package("dev", tmp_path / "again")
    assert again.read_bytes() == (package / "deployment.zip").read_bytes()


# -- make deploy --------------------------------------------------------------------------


def _make(*arguments: str, path_first: Path | None = None) -> subprocess.CompletedProcess[str]:
    # Neither the make that may be running these tests nor the caller's shell sets anything.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DEPLOY_BUCKET", "STAGE", "AWS"}
    }
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        ["make", "--no-print-directory", *arguments],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _fake_aws(directory: Path, *, signed_in: bool) -> Path:
    """An `aws` that writes down each call; `sts` fails as it does with no credentials."""
    directory.mkdir(parents=True, exist_ok=True)
    aws = directory / "aws"
    refuse = 'echo "Unable to locate credentials." >&2; exit 255' if not signed_in else "exit 0"
    aws.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{directory / "calls.log"}"\n'
        f'if [ "$1" = sts ]; then {refuse}; fi\n'
        "exit 0\n"
    )
    aws.chmod(0o755)
    return directory


def test_make_deploy_without_a_bucket_stops_before_calling_aws(tmp_path: Path) -> None:
    bin_dir = _fake_aws(tmp_path / "bin", signed_in=True)
    result = _make("deploy", "STAGE=prod", path_first=bin_dir)
    assert result.returncode != 0
    assert "make deploy needs DEPLOY_BUCKET" in result.stdout
    assert not (bin_dir / "calls.log").exists()


def test_make_deploy_without_the_aws_cli_says_so(tmp_path: Path) -> None:
    result = _make("deploy", "STAGE=prod", "DEPLOY_BUCKET=b", f"AWS={tmp_path / 'no-aws'}")
    assert result.returncode != 0
    assert "make deploy needs the AWS CLI" in result.stdout
    assert "forewarn package" not in result.stdout


def test_make_deploy_without_credentials_stops_before_packaging(tmp_path: Path) -> None:
    bin_dir = _fake_aws(tmp_path / "bin", signed_in=False)
    result = _make("deploy", "STAGE=prod", "DEPLOY_BUCKET=b", path_first=bin_dir)
    assert result.returncode != 0
    assert "make deploy needs AWS credentials" in result.stdout
    assert (bin_dir / "calls.log").read_text().splitlines() == [
        "sts get-caller-identity --output text"
    ]
    assert "forewarn package" not in result.stdout


def test_make_deploy_packages_offline_then_uploads_and_deploys_the_stage() -> None:
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    sender = config["stages"]["prod"]["environment_variables"]["SENDER_EMAIL"]
    result = _make("-n", "deploy", "STAGE=prod", "DEPLOY_BUCKET=artifacts-b")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()

    def index(start: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(start))

    build = index(".venv/bin/forewarn package --stage prod --out build/prod")
    upload = index("aws cloudformation package --template-file build/prod/sam.json")
    deploy = index("aws cloudformation deploy --template-file build/prod/packaged.json")
    assert index('test -n "artifacts-b"') < index("command -v aws") < build < upload < deploy
    assert "--s3-bucket artifacts-b" in lines[upload]
    assert "--stack-name forewarn-prod" in lines[deploy]
    assert "--capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND" in lines[deploy]
    assert f"--parameter-overrides Stage=prod SenderEmail={sender} " in lines[deploy]


# -- least privilege, and the merged template's lint ----------------------------------------------


def test_each_function_runs_under_a_role_of_its_own_with_its_own_policy_file(
    package: Path,
) -> None:
    from chalice.utils import to_cfn_resource_name

    resources = json.loads((package / "sam.json").read_text())["Resources"]
    # With autogen_policy off there is no shared role that Chalice's guesswork fills.
    assert "DefaultRole" not in resources
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    assert config["autogen_policy"] is False
    functions = {
        logical: r for logical, r in resources.items() if r["Type"] == "AWS::Serverless::Function"
    }
    roles = set()
    for name, spec in config["lambda_functions"].items():
        logical = "APIHandler" if name == "api_handler" else to_cfn_resource_name(name)
        role = functions.pop(logical)["Properties"]["Role"]["Fn::GetAtt"][0]
        roles.add(role)
        (policy,) = resources[role]["Properties"]["Policies"]
        written = json.loads((PROJECT_DIR / ".chalice" / spec["iam_policy_file"]).read_text())
        assert policy["PolicyDocument"] == written, name
    assert not functions, f"functions without a policy file of their own: {sorted(functions)}"
    assert len(roles) == len(config["lambda_functions"])


def _lint_offline(command: Sequence[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    offline = Offline.at(tmp_path / "offline")
    result = offline.run(command, cwd=PROJECT_DIR)
    assert offline.attempts() == [], offline.attempts()
    return result


def test_the_merged_template_passes_cfn_lint_offline(package: Path, tmp_path: Path) -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = _lint_offline([str(cfn_lint), str(package / "sam.json")], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_merged_template_passes_checkov_offline(package: Path, tmp_path: Path) -> None:
    # checkov has a venv of its own (it pins its own boto3); `make lint` makes it.
    checkov = PROJECT_DIR / ".venv" / "checkov" / "bin" / "checkov"
    assert checkov.exists(), "no checkov: `make lint` (part of `make test`) installs it"
    # Without the variable checkov asks PyPI for a newer version of itself (cached a while,
    # so it shows only on a fresh machine).
    command = ["env", "CKV_SKIP_PACKAGE_UPDATE_CHECK=true", str(checkov)]
    command += ["--quiet", "--compact", "--skip-download"]
    command += ["--framework", "cloudformation", "-f", str(package / "sam.json")]
    result = _lint_offline(command, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed checks: 0" in result.stdout
