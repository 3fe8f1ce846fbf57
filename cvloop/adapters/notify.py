"""Notifications: the people of the runbook told when they are needed, through Prefect's own
mechanism (events, an automation, a notification block), not a mailer of cvloop's own.

cvloop emits a Prefect event ``cvloop.notify.<kind>`` (resource ``cvloop.model.<model>``)
where something needs a person:

====================  ==========================================  =====================
kind                  when                                        for
====================  ==========================================  =====================
trigger_fired         the weekly check fired a trigger            on-call
review_ready          a review queue is in Label Studio           reviewers
review_stalled        a review passed its deadline unfinished     on-call, ML lead
review_disagreement   two reviewers disagree on a class           ML lead, reviewers
approval_waiting      a rollout waits for the ML lead             ML lead
canary_breach         a canary breach rolled a challenger back    on-call, ML lead
rollback              someone rolled back by hand                 on-call, ML lead
candidate_rejected    the gates rejected a candidate              ML lead
====================  ==========================================  =====================

The automation ``cvloop-notify`` (made by ``cvloop deploy`` when
``CVLOOP_NOTIFY_WEBHOOK_URL`` is set) sends every such event to the notification block
``cvloop-notify``: a Custom Webhook posting ``{"text": ...}`` — what Slack and Teams
incoming webhooks and most email gateways take. The URL is kept in the block's secrets (a
webhook URL is a credential), never in its plain fields. The text names the owners
(params ``owners``) and carries the links the person needs.

Each occurrence notifies once: its key is claimed in the store first (a create-only
compare-and-put under ``notifications/``), so a retried task or a re-run flow does not
notify twice; a notification that cannot be emitted gives its claim back (a retry may
send it) and never stops the step that asked for it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence

EVENT_PREFIX = "cvloop.notify."
NAME = "cvloop-notify"  # the block's and the automation's name
KINDS = (
    "trigger_fired",
    "review_ready",
    "review_stalled",
    "review_disagreement",
    "approval_waiting",
    "canary_breach",
    "rollback",
    "candidate_rejected",
)


def notification_text(
    title: str, body: str, links: Mapping[str, str], owners: Sequence[str]
) -> str:
    """What the person reads: the title, who it is for, what happened, the links."""
    lines = [title]
    if owners:
        lines.append("For: " + ", ".join(owners))
    if body:
        lines += ["", body]
    if links:
        lines += ["", *(f"{name}: {url}" for name, url in links.items())]
    return "\n".join(lines)


def notify(
    store,
    model: str,
    kind: str,
    key: str,
    title: str,
    body: str = "",
    links: Mapping[str, str] | None = None,
    owners: Sequence[str] = (),
) -> bool:
    """Emit the ``kind`` notification for the occurrence ``key`` (e.g. a flow run, a model
    version) unless it was emitted before; returns whether it was emitted now."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}: one of {KINDS}")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-")
    record_key = f"notifications/{kind}/{safe}.json"
    text = notification_text(title, body, dict(links or {}), owners)
    record = {"kind": kind, "key": key, "title": title, "text": text,
              "at": dt.datetime.now(dt.UTC).isoformat()}  # fmt: skip
    try:
        if not store.compare_and_put(
            record_key, json.dumps(record).encode(), lambda old: old is None
        ):
            return False  # this occurrence was notified already
    except Exception as exc:  # telling people must never stop the loop
        print(f"notification {kind} ({key}) not recorded: {exc}")
        return False
    try:
        from prefect.events import emit_event

        resource = {"prefect.resource.id": f"cvloop.model.{model}", "prefect.resource.name": model}
        payload = {"kind": kind, "key": key, "title": title, "text": text,
                   "links": dict(links or {}), "owners": list(owners)}  # fmt: skip
        emit_event(event=EVENT_PREFIX + kind, resource=resource, payload=payload)
    except Exception as exc:
        print(f"notification {kind} ({key}) not emitted: {exc}")
        try:
            store.delete(record_key)  # a retry of the step may tell them
        except Exception as again:  # the record stays: this occurrence is not told again
            print(f"notification {kind} ({key}): its record stays: {again}")
        return False
    print(f"notified ({kind}): {title}")
    return True


def ensure_notifications(webhook_url: str | None) -> str:
    """The notification block and the automation that sends every ``cvloop.notify.*``
    event to it (created, or updated to this URL); removed when ``webhook_url`` is empty.
    Returns what was done."""
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    existing = None
    try:
        existing = Automation.read(name=NAME)
    except Exception:  # none yet (the client raises when it is missing)
        existing = None
    if not webhook_url:
        if existing is not None:
            existing.delete()
            return f"automation {NAME} removed (CVLOOP_NOTIFY_WEBHOOK_URL is not set)"
        return "notifications off (CVLOOP_NOTIFY_WEBHOOK_URL is not set)"
    block = CustomWebhookNotificationBlock(
        name=NAME,
        url="{{webhook_url}}",  # the URL itself is a secret
        method="POST",
        json_data={"text": "{{body}}", "subject": "{{subject}}"},
        secrets={"webhook_url": webhook_url},
        timeout=10,
    )
    block_id = block.save(NAME, overwrite=True)
    automation = Automation(
        name=NAME,
        description="cvloop: tell the runbook's people when they are needed (adapters/notify.py)",
        enabled=True,
        trigger=EventTrigger(
            expect={f"{EVENT_PREFIX}*"},
            match={"prefect.resource.id": "cvloop.model.*"},
            posture=Posture.Reactive,
            threshold=1,
            within=dt.timedelta(0),
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="{{ event.payload.title }}",
                body="{{ event.payload.text }}",
            )
        ],
    )
    if existing is not None:
        automation.id = existing.id
        automation.update()
        return f"automation {NAME} updated"
    automation.create()
    return f"automation {NAME} created"
