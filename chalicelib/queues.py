"""The edge to SQS: send JSON jobs in batches, and push a message's retry further out."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib import aws

_urls: dict[str, str] = {}


@dataclass(frozen=True)
class QueueMessage:
    """One SQS record as a Lambda event source mapping hands it over."""

    message_id: str
    body: str
    receipt_handle: str
    receive_count: int

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> QueueMessage:
        return cls(
            message_id=str(record["messageId"]),
            body=str(record["body"]),
            receipt_handle=str(record["receiptHandle"]),
            receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)),
        )


def queue_url(name: str) -> str:
    if name not in _urls:
        _urls[name] = aws.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
    return _urls[name]


def forget_queue_urls() -> None:
    _urls.clear()


# SQS's limit of messages in one SendMessageBatch.
SEND_BATCH = 10


def send_json(
    queue_name: str, bodies: Sequence[Mapping[str, Any]], *, delay_seconds: int = 0
) -> None:
    """Send every body, ten per call; entries SQS refuses are retried, then raised."""
    sqs = aws.client("sqs")
    url = queue_url(queue_name)
    for start in range(0, len(bodies), SEND_BATCH):
        entries = [
            {
                "Id": str(i),
                "MessageBody": json.dumps(body, separators=(",", ":")),
                "DelaySeconds": delay_seconds,
            }
            for i, body in enumerate(bodies[start : start + SEND_BATCH])
        ]
        for attempt in range(6):
            failed = sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed", [])
            if not failed:
                break
            failed_ids = {f["Id"] for f in failed}
            entries = [e for e in entries if e["Id"] in failed_ids]
            time.sleep(min(2.0, 0.05 * 2**attempt))
        else:
            raise RuntimeError(f"SQS refused {len(entries)} messages for {queue_name}")


def retry_later(queue_name: str, receipt_handle: str, seconds: int) -> None:
    """Back off a failed message: it becomes visible again after `seconds`."""
    try:
        aws.client("sqs").change_message_visibility(
            QueueUrl=queue_url(queue_name),
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(seconds, 43_200)),
        )
    except Exception as exc:
        # The message still comes back after the queue's own visibility timeout.
        if aws.error_code(exc) not in {"ReceiptHandleIsInvalid", "MessageNotInflight"}:
            raise


# The queues with a dead-letter queue (`<name>-dlq`), by the short name ops use.
REDRIVABLE = ("planner", "deliveries", "notices", "feedback")
MAX_REDRIVE = 10_000


def redrive(stage: str, queue: str, *, limit: int = MAX_REDRIVE) -> dict[str, Any]:
    """Move messages from a dead-letter queue back to its queue, for another try once the
    cause is fixed. A message sent but not yet deleted from the DLQ (a crash in between) is
    then on both: harmless, because every job is idempotent (the ledger, the claims)."""
    from chalicelib.errors import NotFound

    if queue not in REDRIVABLE:
        raise NotFound(f"no queue {queue}; one of: {', '.join(REDRIVABLE)}")
    sqs = aws.client("sqs")
    source = queue_url(f"forewarn-{stage}-{queue}-dlq")
    target = queue_url(f"forewarn-{stage}-{queue}")
    moved = 0
    while moved < limit:
        received = sqs.receive_message(
            QueueUrl=source, MaxNumberOfMessages=min(10, limit - moved), WaitTimeSeconds=0
        ).get("Messages", [])
        if not received:
            break
        entries = [{"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(received)]
        failed = {
            f["Id"]
            for f in sqs.send_message_batch(QueueUrl=target, Entries=entries).get("Failed", [])
        }
        done = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(received)
            if str(i) not in failed
        ]
        if done:
            sqs.delete_message_batch(QueueUrl=source, Entries=done)
        moved += len(done)
        if failed:
            break  # what SQS refused stays in the DLQ and shows as left
    left = sqs.get_queue_attributes(
        QueueUrl=source, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    return {"queue": queue, "moved": moved, "left_in_dead_letter_queue": int(left)}
