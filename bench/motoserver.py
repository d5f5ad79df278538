"""moto's server in a process of its own, for benchmarks.

Run as ``python -m bench.motoserver -H 127.0.0.1 -p PORT`` (the arguments of
``moto_server``). It is moto's own server with two changes, both to make it behave like the
services it stands for rather than to make anything faster than they would be:

* Stock moto backs up every table a DynamoDB transaction names with ``copy.deepcopy``
  before running it, and keeps every copied item forever in its model registry. A
  transaction then costs time and memory in proportion to the whole table: seeding 500
  customers took 64 s and left the server at 2 GB, and a 10,000-recipient fan-out (one
  transaction per recipient) could not finish. Here a transaction backs up only the items
  it touches and restores those if it fails.
* moto's server runs each request in a thread but its models take no locks, so two
  concurrent ``ADD n :one`` updates of one item can lose one (a broadcast then never
  completes), and an SQS delete that rebuilds a queue's message list can drop a message
  sent at the same moment. Here requests run one at a time, which costs nothing a
  GIL-bound server had (it ran one at a time anyway) and makes every call atomic as in AWS;
  an SQS long poll gives the turn up while it waits.

Forewarn and the baseline talk to the same server, so the changes apply to both alike.
"""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from forewarn_cli.local.stack import free_port

PROJECT_DIR = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS = 30.0
# Held by the request being served; see the module docstring.
_TURN = threading.Lock()


# --------------------------------------------------------------------------- the server


class _TablesByReference:
    """Stands in for the ``copy`` module inside ``moto.dynamodb.models``.

    A Table "deep-copies" to itself, so moto's own whole-table backup and restore become
    no-ops; the per-item backup in ``_transact_write_items`` takes their place. Anything
    else (moto also copies single items there) is copied as before.
    """

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        if isinstance(value, self._table_type):
            return value
        return copy.deepcopy(value, memo)


def _touched(backend: Any, actions: Sequence[Mapping[str, Any]]) -> list[tuple[Any, Any, Any]]:
    """(table, hash key, range key) of every item a transaction names that exists."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    touched: list[tuple[Any, Any, Any]] = []
    for action in actions:
        for op in action.values():
            if not isinstance(op, Mapping) or op.get("TableName") not in backend.tables:
                continue  # moto itself rejects the malformed action
            table = backend.tables[op["TableName"]]
            key = op.get("Item") if "Item" in op else op.get("Key")
            if not isinstance(key, Mapping) or table.hash_key_attr not in key:
                continue
            hash_key = DynamoType(key[table.hash_key_attr])
            range_key = None
            if table.range_key_attr is not None:
                if table.range_key_attr not in key:
                    continue
                range_key = DynamoType(key[table.range_key_attr])
            touched.append((table, hash_key, range_key))
    return touched


def patch_moto() -> None:
    from moto.dynamodb import models as typed_models
    from moto.dynamodb.models.table import Table

    # Typed as Any: this deliberately replaces what moto's own types say is fixed.
    models: Any = typed_models
    original = models.DynamoDBBackend.transact_write_items
    models.copy = _TablesByReference(Table)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = [
            (table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key)))
            for table, hash_key, range_key in _touched(self, transact_items)
        ]
        try:
            original(self, transact_items)
        except Exception:
            # Put back exactly what this transaction may have changed, last change first.
            for table, hash_key, range_key, item in reversed(saved):
                if item is None:
                    table.delete_item(hash_key, range_key)
                elif range_key is None:
                    table.items[hash_key] = item
                else:
                    table.items[hash_key][range_key] = item
            raise

    models.DynamoDBBackend.transact_write_items = transact_write_items
    _one_request_at_a_time()


def _one_request_at_a_time() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.sqs.models import Queue

    dispatcher: Any = DomainDispatcherApplication
    queue: Any = Queue
    serve, wait_for_messages = dispatcher.__call__, queue.wait_for_messages

    def serve_in_turn(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        with _TURN:
            return serve(self, environ, start_response)

    def wait_out_of_turn(self: Any, timeout: int) -> None:
        # A long poll waits for another request's send: it must not hold the turn meanwhile.
        _TURN.release()
        try:
            wait_for_messages(self, timeout)
        finally:
            _TURN.acquire()

    dispatcher.__call__ = serve_in_turn
    queue.wait_for_messages = wait_out_of_turn


def main(argv: list[str] | None = None) -> None:
    from moto.server import main as moto_main

    patch_moto()
    # A log line per request costs the server time that neither side of a benchmark owns.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto_main(argv if argv is not None else sys.argv[1:])


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
            [sys.executable, "-m", "bench.motoserver", "-H", self.host, "-p", str(self.port)],
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


if __name__ == "__main__":
    main()
