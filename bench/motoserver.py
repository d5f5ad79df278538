"""A moto server in a process of its own for the benchmarks, so that the AWS stand-in does
not share a GIL with the code measured. The server is `forewarn_cli.local.awsserver`: moto's
own, made atomic per request (see there)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from forewarn_cli.local.awsserver import STATS_PATH
from forewarn_cli.local.stack import free_port

PROJECT_DIR = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS = 30.0


# --------------------------------------------------------------------------- the client


class MotoProcess:
    """Starts the server above as a subprocess and talks to its ``/moto-api``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "forewarn_cli.local.awsserver",
                "-H",
                self.host,
                "-p",
                str(self.port),
            ],
            cwd=PROJECT_DIR,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/reset-auth", timeout=1):
                    pass
            except urllib.error.HTTPError:
                return  # it answers (a GET of a POST-only endpoint is a 400)
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not answer in time") from None
                time.sleep(0.1)
            else:
                return

    def reset(self) -> None:
        """Forget every resource and recorded message, as a fresh server would."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=60):
            pass

    def data(self) -> dict[str, Any]:
        # Every model moto tracks; slow with many items, so only called after timing.
        with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=300) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def sent_messages(self) -> tuple[int, int]:
        """(SMS published, raw emails sent) as the server recorded them."""
        data = self.data()
        sms = len(data.get("sns", {}).get("SMS", []))
        emails = len(data.get("ses", {}).get("RawMessage", []))
        return sms, emails

    def cpu_by_action(self, *, clear: bool = False) -> dict[str, dict[str, float]]:
        """Server CPU seconds and calls per AWS action since the last clear."""
        request = urllib.request.Request(
            f"{self.url}{STATS_PATH}", method="POST" if clear else "GET"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            data: dict[str, dict[str, float]] = json.load(response)
        return data

    def rss_mb(self) -> float:
        """The server's resident memory, a sign of moto bookkeeping rather than our code."""
        if self._process is None:
            return 0.0
        try:
            status = Path(f"/proc/{self._process.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> MotoProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
