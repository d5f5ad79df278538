"""The deployment package carries everything the functions read at run time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from forewarn_cli.packaging import PROJECT_DIR, build_package

pytestmark = pytest.mark.package

LAMBDA_ZIP_LIMIT = 50 * 1024 * 1024
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package("dev", tmp_path_factory.mktemp("package") / "dev").parent


def test_every_template_is_inside_the_zip(package: Path) -> None:
    names = set(zipfile.ZipFile(package / "deployment.zip").namelist())
    # Notice templates, the console's pages and its static files alike.
    templates = [p for p in (PROJECT_DIR / "templates").rglob("*") if p.is_file()]
    assert any(p.suffix == ".css" for p in templates)
    for template in templates:
        relative = template.relative_to(PROJECT_DIR / "templates").as_posix()
        assert f"chalicelib/templates/{relative}" in names, relative
    assert {"app.py", "chalicelib/notices.py", "jinja2/__init__.py"} <= names


def test_the_package_renders_notices_without_the_source_tree(package: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "task"
    zipfile.ZipFile(package / "deployment.zip").extractall(unpacked)
    # -S: no site-packages, so neither the source tree (installed editable) nor the
    # development environment's libraries can stand in for what the zip carries.
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
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe, str(unpacked)],
        cwd=unpacked,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(unpacked)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "mobile" in result.stdout


def test_the_package_carries_the_maintenance_heads_up_and_shows_its_window_locally(
    package: Path, tmp_path: Path
) -> None:
    # Status sources send a heads-up only when the kind is available in the package itself.
    unpacked = tmp_path / "task"
    zipfile.ZipFile(package / "deployment.zip").extractall(unpacked)
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
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        cwd=unpacked,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(unpacked)},
        capture_output=True,
        text=True,
        check=False,
    )
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
