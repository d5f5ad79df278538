"""moto's server, made to behave like the services it stands for under concurrency.

The local stack (`forewarn run`, the tests) and the benchmarks run moto's own server with
these changes, none of which makes anything cheaper than AWS would:

* Stock moto backs up every table a DynamoDB transaction names with ``copy.deepcopy``
  before running it, and keeps every copied item in its model registry. A transaction then
  costs time and memory in proportion to the whole table: seeding 500 customers took 64 s
  and left the server at 2 GB, and a 10,000-recipient fan-out (one transaction per
  recipient) could not finish. Here a transaction backs up only the items it touches and
  restores those if it fails.
* moto's server runs each request in a thread but its models take no locks, so two
  concurrent ``ADD n :one`` updates of one item can lose one (a broadcast then never
  completes), and an SQS delete that rebuilds a queue's message list can drop a message
  sent at the same moment. Here requests take turns, which makes every call atomic as in
  AWS; an SQS long poll gives the turn up while it waits.
* Finding visible SQS messages reads the clock once per scan rather than twice per message.

Run standalone as ``python -m forewarn_cli.local.awsserver -H 127.0.0.1 -p PORT`` (the
arguments of ``moto_server``), or call ``patch_moto()`` before starting moto in-process.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

# Held by the request being served; see the module docstring.
_TURN = threading.Lock()
# GET returns the server's CPU seconds per AWS action since the last POST (which clears them).
STATS_PATH = "/_forewarn/cpu"
_patched = False
_cpu: dict[str, list[float]] = {}


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
    """Apply the changes above to moto in this process, once."""
    global _patched
    if _patched:
        return
    _patched = True
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
    _sqs_scans_once()
    _one_request_at_a_time()


def _sqs_scans_once() -> None:
    from moto.core.utils import unix_time_millis
    from moto.sqs.exceptions import ReceiptHandleIsInvalid
    from moto.sqs.models import Queue

    queue: Any = Queue

    # The same tests as moto's Message.visible and Message.delayed, one clock read per scan.
    def messages(self: Any) -> list[Any]:
        now = unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and now >= m.delayed_until]

    def delayed(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if now < m.delayed_until)

    def not_visible(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if now <= m.visible_at)

    def delete_message(self: Any, receipt_handle: str) -> None:
        if receipt_handle in self.deleted_messages:
            return  # moto deletes twice gracefully, as SQS does
        kept: list[Any] = []
        gone: list[Any] = []
        for message in self._messages:
            # Message.had_receipt_handle, without building a list per message.
            had = message.receipt_handle == receipt_handle or (
                receipt_handle in message._old_receipt_handles
            )
            (gone if had else kept).append(message)
        if not gone:
            raise ReceiptHandleIsInvalid()
        for message in gone:
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)
        self._messages = kept

    queue.messages = property(messages)
    queue.approximate_number_of_messages_delayed = property(delayed)
    queue.approximate_number_of_messages_not_visible = property(not_visible)
    queue.delete_message = delete_message


def _one_request_at_a_time() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.sqs.models import Queue

    dispatcher: Any = DomainDispatcherApplication
    queue: Any = Queue
    serve, wait_for_messages = dispatcher.__call__, queue.wait_for_messages

    def serve_in_turn(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == STATS_PATH:
            return _serve_stats(environ, start_response)
        with _TURN:
            # Thread CPU time, not wall time: a long poll's wait is not work.
            started = time.thread_time()
            try:
                return serve(self, environ, start_response)
            finally:
                entry = _cpu.setdefault(_action(environ), [0, 0.0])
                entry[0] += 1
                entry[1] += time.thread_time() - started

    def wait_out_of_turn(self: Any, timeout: int) -> None:
        # A long poll waits for another request's send: it must not hold the turn meanwhile.
        _TURN.release()
        try:
            wait_for_messages(self, timeout)
        finally:
            _TURN.acquire()

    dispatcher.__call__ = serve_in_turn
    queue.wait_for_messages = wait_out_of_turn


def _action(environ: Mapping[str, Any]) -> str:
    """'dynamodb.UpdateItem', 'sqs.ReceiveMessage', or the service alone (query protocol)."""
    target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
    # SigV4: Credential=<key>/<date>/<region>/<service>/aws4_request
    scope = str(environ.get("HTTP_AUTHORIZATION", "")).split("Credential=", 1)[-1].split("/")
    service = scope[3] if len(scope) > 4 else str(environ.get("PATH_INFO", "?"))
    return f"{service}.{target.rsplit('.', 1)[-1]}" if target else service


def _serve_stats(environ: Mapping[str, Any], start_response: Any) -> list[bytes]:
    with _TURN:
        if environ.get("REQUEST_METHOD") == "POST":
            _cpu.clear()
        body = json.dumps({k: {"calls": int(n), "cpu_s": t} for k, (n, t) in _cpu.items()})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


def start_in_process(host: str, port: int) -> Any:
    """moto's server on a thread of this process, patched; returns it for `.stop()`."""
    from moto.server import ThreadedMotoServer

    patch_moto()
    # One log line per AWS call drowns out everything else.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    return server


def main(argv: list[str] | None = None) -> None:
    from moto.server import main as moto_main

    patch_moto()
    # A log line per request costs the server time that neither side of a benchmark owns.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
