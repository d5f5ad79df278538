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

import pytest

from forewarn_cli import packaging
from forewarn_cli.packaging import PROJECT_DIR, WheelhouseError, build_package, lambda_target

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
    assert not any(name.startswith("bin/") or name.endswith(".pyc") for name in archive.namelist())


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
