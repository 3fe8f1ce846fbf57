"""Notifications (cvloop/adapters/notify.py): once per occurrence, owners and links in the
text, and never a failure of the step that asked for one."""

from __future__ import annotations

import pytest

from cvloop.adapters.notify import notification_text, notify
from cvloop.adapters.storage import LocalStorage
from cvloop.config.params import OwnersParams


@pytest.fixture()
def emitted(monkeypatch):
    import prefect.events

    sent: list[dict] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: sent.append(kw))
    return sent


def test_once_per_occurrence_with_owners_and_links(tmp_path, emitted):
    store = LocalStorage(tmp_path)
    owners = OwnersParams(ml_lead="Ada", reviewers=["Cy", "Di"]).names("ml_lead", "on_call",
                                                                       "reviewers")  # fmt: skip
    assert owners == ["ml lead: Ada", "reviewers: Cy, Di"]  # on-call not named: left out
    args = (store, "dock", "approval_waiting", "v3", "dock: v3 waits", "at 50 %",
            {"approve (MLflow)": "http://mlflow/#/models/dock/versions/3"}, owners)  # fmt: skip
    assert notify(*args) and not notify(*args)  # a retried task does not tell twice
    assert notify(store, "dock", "approval_waiting", "v4", "dock: v4 waits")  # another one
    assert len(emitted) == 2
    ev = emitted[0]
    assert ev["event"] == "cvloop.notify.approval_waiting"
    assert ev["resource"]["prefect.resource.id"] == "cvloop.model.dock"
    assert ev["payload"]["text"] == (
        "dock: v3 waits\nFor: ml lead: Ada, reviewers: Cy, Di\n\nat 50 %\n\n"
        "approve (MLflow): http://mlflow/#/models/dock/versions/3"
    )
    assert store.keys("notifications/") == ["notifications/approval_waiting/v3.json",
                                            "notifications/approval_waiting/v4.json"]  # fmt: skip
    with pytest.raises(ValueError, match="unknown notification kind"):
        notify(store, "dock", "lunch", "k", "t")


def test_a_notification_that_cannot_be_sent_never_stops_the_step(tmp_path, monkeypatch, capsys):
    import prefect.events

    def down(**kw):
        raise ConnectionError("Prefect is down")

    monkeypatch.setattr(prefect.events, "emit_event", down)
    store = LocalStorage(tmp_path)
    assert not notify(store, "dock", "rollback", "k", "rolled back")
    assert "not emitted: Prefect is down" in capsys.readouterr().out
    assert store.keys("notifications/") == []  # the claim is given back: a retry may send it
    sent: list = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: sent.append(kw))
    assert notify(store, "dock", "rollback", "k", "rolled back") and len(sent) == 1


def test_text_without_owners_or_links_is_just_the_message():
    assert notification_text("t", "", {}, []) == "t"
