"""Forewarn's Lambda entry points. Wiring only: each handler parses its event and calls
one function in chalicelib."""

from __future__ import annotations

from typing import Any

from chalice.app import (
    AuthRequest,
    AuthResponse,
    Chalice,
    CloudWatchEvent,
    Rate,
    Response,
    SQSEvent,
)

from chalicelib import (
    broadcasts,
    console_broadcasts,
    console_pages,
    customer_import,
    customer_notices,
    deliveries,
    handoff,
    http,
    incidents,
    lookup,
    observability,
    queues,
    replies,
    shipment_api,
    signin,
    suppressions,
    topics,
    unsubscribe,
)
from chalicelib.auth import OPS, SOCIAL, Principal
from chalicelib.config import Names, scan_rate_minutes, settings, stage
from chalicelib.console import Console, PageRequest, Result
from chalicelib.queues import QueueMessage
from chalicelib.runtime import audit_log, services, signals
from chalicelib.scans import scheduled_scan
from chalicelib.x import x_poster

app = Chalice(app_name="forewarn")
# Around every handler: JSON logs with correlation ids, and EMF metrics flushed at its end.
app.register_middleware(observability.middleware, "all")
names = Names(stage())


@app.authorizer()
def bearer(auth_request: AuthRequest) -> AuthResponse:
    return api.authorize(auth_request.token)


api = http.Api(app, authorizer=bearer, audit=audit_log)
console = Console(app, audit=audit_log)


@app.route("/api/health")
def health() -> Response:
    return http.json_response({"status": "ok", "stage": names.stage})


@api.route("/api/whoami", roles=(OPS, SOCIAL))
def whoami(principal: Principal) -> dict[str, str]:
    return {"subject": principal.subject, "role": principal.role}


@api.route("/api/customers", methods=("POST",), roles=(OPS,))
def import_customers(principal: Principal) -> dict[str, Any]:
    return customer_import.import_customers(services().store, api.body())


@api.route("/api/lookup", roles=(OPS,))
def lookup_customer(principal: Principal) -> dict[str, Any]:
    return lookup.lookup(services().store, api.query("q"))


@api.route("/api/customers/{customer_id}", roles=(OPS,))
def get_customer(principal: Principal, customer_id: str) -> dict[str, Any]:
    return customer_import.get_customer(services().store, customer_id)


@api.route("/api/incidents", methods=("POST",), roles=(OPS,), status=201)
def create_incident(principal: Principal) -> dict[str, Any]:
    incident = incidents.create_incident(services().store, api.body())
    return incident.to_dict()


@api.route("/api/incidents/{incident_id}", roles=(OPS, SOCIAL))
def get_incident(principal: Principal, incident_id: str) -> dict[str, Any]:
    return incidents.get_incident(services().store, incident_id).to_dict()


@api.route("/api/incidents/{incident_id}", methods=("PATCH",), roles=(OPS,))
def update_incident(principal: Principal, incident_id: str) -> dict[str, Any]:
    incident = incidents.update_incident(services().store, incident_id, api.body())
    return incident.to_dict()


@api.route("/api/incidents/{incident_id}/broadcasts", roles=(OPS,))
def incident_broadcasts(principal: Principal, incident_id: str) -> dict[str, Any]:
    return broadcasts.list_for_incident(services().store, incident_id)


@api.route("/api/broadcasts", methods=("POST",), roles=(OPS,), status=201)
def create_broadcast(principal: Principal) -> dict[str, Any]:
    return broadcasts.create_broadcast(services(), api.body(), actor=principal.subject).to_dict()


@api.route("/api/broadcasts/{broadcast_id}", roles=(OPS,))
def get_broadcast(principal: Principal, broadcast_id: str) -> dict[str, Any]:
    return broadcasts.get_broadcast(services().store, broadcast_id).to_dict()


@api.route("/api/broadcasts/{broadcast_id}/preview", roles=(OPS,))
def preview_broadcast(principal: Principal, broadcast_id: str) -> dict[str, Any]:
    return broadcasts.preview(services(), broadcast_id, customer_id=api.query("customer_id"))


@api.route("/api/broadcasts/{broadcast_id}/approve", methods=("POST",), roles=(OPS,))
def approve_broadcast(principal: Principal, broadcast_id: str) -> dict[str, Any]:
    return broadcasts.approve(services(), broadcast_id, actor=principal.subject).to_dict()


@api.route("/api/broadcasts/{broadcast_id}/send", methods=("POST",), roles=(OPS,))
def send_broadcast(principal: Principal, broadcast_id: str) -> dict[str, Any]:
    return broadcasts.send(services(), broadcast_id).to_dict()


@api.route("/api/broadcasts/{broadcast_id}/dry-run", roles=(OPS,))
def dry_run_broadcast(principal: Principal, broadcast_id: str) -> dict[str, Any]:
    return broadcasts.dry_run(services(), broadcast_id)


@api.route("/api/broadcasts/{broadcast_id}/reconcile", roles=(OPS,))
def reconcile_broadcast(principal: Principal, broadcast_id: str) -> dict[str, Any]:
    return broadcasts.reconcile(services(), broadcast_id)


@api.route("/api/broadcasts/{broadcast_id}/halt", methods=("POST",), roles=(OPS,))
def halt_broadcast(principal: Principal, broadcast_id: str) -> dict[str, Any]:
    return broadcasts.halt(services(), broadcast_id, actor=principal.subject).to_dict()


@app.on_sqs_message(queue=names.planner_queue, batch_size=1)
def plan_broadcast(event: SQSEvent) -> None:
    for record in event:
        broadcasts.plan_message(services(), record.body)


@app.on_sqs_message(queue=names.delivery_queue, batch_size=10)
def deliver_notices(event: SQSEvent) -> dict[str, Any]:
    messages = [QueueMessage.from_record(record.to_dict()) for record in event]
    failed = deliveries.handle_batch(services(), messages)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


@app.on_sqs_message(queue=names.notice_queue, batch_size=10)
def deliver_customer_notices(event: SQSEvent) -> dict[str, Any]:
    messages = [QueueMessage.from_record(record.to_dict()) for record in event]
    failed = customer_notices.handle_batch(services(), messages)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


@app.on_sqs_message(queue=names.feedback_queue, batch_size=10)
def apply_feedback(event: SQSEvent) -> dict[str, Any]:
    messages = [QueueMessage.from_record(record.to_dict()) for record in event]
    failed = suppressions.handle_batch(services(), messages)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


@api.route("/api/queues/{queue}/redrive", methods=("POST",), roles=(OPS,))
def redrive_queue(principal: Principal, queue: str) -> dict[str, Any]:
    return queues.redrive(names.stage, queue)


@app.schedule("rate(1 minute)")
def sweep_broadcasts(event: CloudWatchEvent) -> None:
    broadcasts.sweep(services())


# -- social listening ------------------------------------------------------------------------


@api.route("/api/topics", roles=(OPS, SOCIAL))
def list_topics(principal: Principal) -> dict[str, Any]:
    return topics.list_topics(signals())


@api.route("/api/topics/{topic_id}", methods=("PUT",), roles=(OPS,))
def put_topic(principal: Principal, topic_id: str) -> dict[str, Any]:
    return topics.put_topic(signals(), topic_id, api.body())


@api.route("/api/emerging", roles=(OPS, SOCIAL))
def list_emerging(principal: Principal) -> dict[str, Any]:
    status = api.query("status") or "open"
    return {"issues": [i.to_dict() for i in signals().issues(status)]}


@api.route("/api/emerging/{issue_id}", roles=(OPS, SOCIAL))
def get_emerging(principal: Principal, issue_id: str) -> dict[str, Any]:
    return signals().get_issue(issue_id).to_dict()


@api.route("/api/emerging/{issue_id}/incident", methods=("POST",), roles=(OPS,), status=201)
def promote_emerging(principal: Principal, issue_id: str) -> dict[str, Any]:
    return handoff.promote(
        services(), signals(), issue_id, api.body(optional=True), actor=principal.subject
    )


@api.route("/api/flags", roles=(SOCIAL, OPS))
def list_flags(principal: Principal) -> dict[str, Any]:
    names_ = ("state", "topic", "issue", "sentiment", "min_followers", "limit", "cursor")
    return handoff.list_flags(signals(), {name: api.query(name) for name in names_})


@api.route("/api/flags/{post_id}/reply", methods=("POST",), roles=(SOCIAL, OPS))
def reply_to_flag(principal: Principal, post_id: str) -> dict[str, Any]:
    return replies.reply_to_flag(
        services().store, signals(), x_poster(), post_id, api.body(), actor=principal.subject
    )


@api.route("/api/flags/{post_id}/{action}", methods=("POST",), roles=(SOCIAL, OPS))
def decide_flag(principal: Principal, post_id: str, action: str) -> dict[str, Any]:
    return handoff.decide_flag(
        services().store,
        signals(),
        post_id,
        action,
        api.body(optional=True),
        actor=principal.subject,
    )


@app.schedule(Rate(scan_rate_minutes(), unit=Rate.MINUTES))
def scan_social_feeds(event: CloudWatchEvent) -> dict[str, Any]:
    return scheduled_scan(event.context)


# -- shipments --------------------------------------------------------------------------------


@api.route("/api/shipments", methods=("POST",), roles=(OPS,))
def import_shipments(principal: Principal) -> dict[str, Any]:
    return shipment_api.import_shipments(services().store, api.body())


@api.route("/api/customers/{customer_id}/shipments", roles=(OPS,))
def customer_shipments(principal: Principal, customer_id: str) -> dict[str, Any]:
    return shipment_api.customer_shipments(services().store, customer_id)


@api.route("/api/shipments/{tracking_code}", roles=(OPS,))
def get_shipment(principal: Principal, tracking_code: str) -> dict[str, Any]:
    return shipment_api.get_shipment(services().store, tracking_code)


@api.signed_route("/webhooks/easypost")
def easypost_webhook(body: bytes, headers: Any) -> dict[str, Any]:
    return shipment_api.receive_easypost(services(), body, headers)


@api.signed_route("/webhooks/aftership")
def aftership_webhook(body: bytes, headers: Any) -> dict[str, Any]:
    return shipment_api.receive_aftership(services(), body, headers)


# -- status sources ---------------------------------------------------------------------------

# Each handler imports chalicelib.status_sources itself: at module level it would add about
# 40 ms to every function's cold start.


@api.route("/api/sources", methods=("POST",), roles=(OPS,), status=201)
def create_source(principal: Principal) -> dict[str, Any]:
    from chalicelib import status_sources

    return status_sources.create_source(services(), api.body())


@api.route("/api/sources", roles=(OPS,))
def list_sources(principal: Principal) -> dict[str, Any]:
    from chalicelib import status_sources

    return status_sources.list_sources(services())


@api.route("/api/sources/{source_id}", roles=(OPS,))
def get_source(principal: Principal, source_id: str) -> dict[str, Any]:
    from chalicelib import status_sources

    return status_sources.get_source(services(), source_id)


@api.route("/api/sources/{source_id}", methods=("PATCH",), roles=(OPS,))
def update_source(principal: Principal, source_id: str) -> dict[str, Any]:
    from chalicelib import status_sources

    return status_sources.update_source(services(), source_id, api.body())


@api.route("/api/sources/{source_id}/poll", methods=("POST",), roles=(OPS,))
def poll_source(principal: Principal, source_id: str) -> dict[str, Any]:
    from chalicelib import status_sources

    return status_sources.poll_source_now(services(), source_id)


@api.signed_route("/webhooks/sources/{source_id}")
def signed_source_webhook(body: bytes, headers: Any, source_id: str) -> dict[str, Any]:
    from chalicelib import status_sources

    return status_sources.receive_signed_webhook(services(), source_id, body, headers)


@api.signed_route("/webhooks/statuspage/{source_id}")
def statuspage_webhook(body: bytes, headers: Any, source_id: str) -> dict[str, Any]:
    from chalicelib import status_sources

    return status_sources.receive_statuspage_webhook(
        services(), source_id, body, headers, token=api.query("token")
    )


@app.schedule("rate(1 minute)")
def poll_status_sources(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib import status_sources

    return status_sources.scheduled_poll(event.context)


# -- console ----------------------------------------------------------------------------------


@console.public_page("/console/sign-in", methods=("GET", "POST"))
def sign_in() -> Response:
    return console.sign_in(lambda user, password: signin.sign_in(user, password, settings()))


@console.public_page("/console/sign-out", methods=("POST",))
def sign_out() -> Response:
    return console.sign_out()


@console.public_page("/console/static/{name}")
def console_static(name: str) -> Response:
    return console.static(name)


@console.page("/console", roles=(OPS, SOCIAL))
def dashboard(page: PageRequest) -> Result:
    return console_pages.dashboard(services(), signals())


@console.page("/console/flags", roles=(SOCIAL, OPS))
def flags_page(page: PageRequest) -> Result:
    return console_pages.flags(services(), signals(), page)


@console.page("/console/flags/{post_id}/reply", roles=(SOCIAL, OPS))
def reply_preview_page(page: PageRequest, post_id: str) -> Result:
    return console_pages.reply_preview(services(), signals(), page, post_id)


@console.page("/console/flags/{post_id}/reply", methods=("POST",), roles=(SOCIAL, OPS))
def reply_page(page: PageRequest, post_id: str) -> Result:
    return console_pages.reply(services(), signals(), x_poster(), page, post_id)


@console.page("/console/flags/{post_id}/{action}", methods=("POST",), roles=(SOCIAL, OPS))
def decide_flag_page(page: PageRequest, post_id: str, action: str) -> Result:
    return console_pages.decide_flag(services(), signals(), page, post_id, action)


@console.page("/console/audit", roles=(OPS,))
def audit_page(page: PageRequest) -> Result:
    return console_pages.audit_log(audit_log())


@console.page("/console/broadcasts/new", roles=(OPS,))
def compose_page(page: PageRequest) -> Result:
    return console_broadcasts.composer(services(), page)


@console.page("/console/broadcasts", methods=("POST",), roles=(OPS,))
def create_broadcast_page(page: PageRequest) -> Result:
    return console_broadcasts.create(services(), page)


@console.page("/console/audience-count", roles=(OPS,))
def audience_count_page(page: PageRequest) -> Result:
    return console_broadcasts.audience_count(services(), page)


@console.page("/console/broadcasts/{broadcast_id}", roles=(OPS,))
def broadcast_page(page: PageRequest, broadcast_id: str) -> Result:
    return console_broadcasts.review(services(), page, broadcast_id)


@console.page("/console/broadcasts/{broadcast_id}/dry-run", roles=(OPS,))
def dry_run_page(page: PageRequest, broadcast_id: str) -> Result:
    return console_broadcasts.dry_run(services(), broadcast_id)


@console.page("/console/broadcasts/{broadcast_id}/{action}", methods=("POST",), roles=(OPS,))
def broadcast_action_page(page: PageRequest, broadcast_id: str, action: str) -> Result:
    return console_broadcasts.act(services(), page, broadcast_id, action)


@console.page("/console/incidents/{incident_id}", roles=(OPS, SOCIAL))
def incident_page(page: PageRequest, incident_id: str) -> Result:
    return console_pages.incident_page(
        services(), signals(), incident_id, page.query.get("done", "")
    )


@console.page("/console/incidents/{incident_id}", methods=("POST",), roles=(OPS,))
def update_incident_page(page: PageRequest, incident_id: str) -> Result:
    return console_pages.update_incident(services(), page, incident_id)


@console.page("/console/customers", roles=(OPS,))
def customer_lookup_page(page: PageRequest) -> Result:
    return console_pages.customer_lookup(services(), page)


@console.public_page("/unsubscribe", methods=("GET", "POST"))
def unsubscribe_page() -> Response:
    return console.unsubscribe(
        unsubscribe.address_of, lambda token: unsubscribe.unsubscribe(settings(), token)
    )
