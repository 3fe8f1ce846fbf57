"""Registration records: what a model file must hash to, written only by the registration.

A registered version's ``cvloop.sha256.*`` tags live in MLflow, where anyone who may tag a
version (every MLflow user: the ML lead, operators in the UI) can rewrite them; a check of
a file against a tag therefore proves nothing once the file and the tag are both changed.
So the registration transaction (:mod:`registry.registration`) also writes a **record** of
the version (its training run and the sha256 of every file) into cvloop's own store, under
``registry-records/<model name>/v<version>.json``, and a model file is loaded only when it
hashes to its record and the record names the version's own training run.

The store is written by cvloop's service account (the flows, the worker); people who only
use MLflow never need write access to it (``runbooks/rollout.md`` says who holds which).
A version made by hand in MLflow has none and is refused until someone with store access
vouches for its files (``cvloop registry trust``). A store with no record of the model at
all predates records (an installation upgraded to this version): its versions' files are
checked against their tags once, as before, and recorded (``recorded_by: migration``), so
from then on a tag rewritten in MLflow changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass

from cvloop.adapters.storage import Storage
from cvloop.core.errors import CvloopError

RECORDS_PREFIX = "registry-records"


class RecordError(CvloopError):
    """A registration record cannot be read as one."""


@dataclass(frozen=True)
class RegistrationRecord:
    """The files of one registered version, as registered."""

    model: str
    version: str
    run_id: str
    sha256: dict[str, str]  # format (pt, onnx, openvino, ...) -> hex digest
    recorded_at: str = ""
    recorded_by: str = "registration"  # or "trust" (a person vouched for existing files)
    note: str = ""


class RegistrationRecords:
    """The records of one store."""

    def __init__(self, store: Storage) -> None:
        self.store = store

    @staticmethod
    def key(model: str, version: str) -> str:
        return f"{RECORDS_PREFIX}/{model}/v{version}.json"

    def write(self, record: RegistrationRecord) -> None:
        rec = record
        if not rec.recorded_at:
            rec = RegistrationRecord(**{**asdict(rec),
                                        "recorded_at": dt.datetime.now(dt.UTC).isoformat()})  # fmt: skip
        self.store.put_text(self.key(rec.model, rec.version), json.dumps(asdict(rec), indent=2))

    def read(self, model: str, version: str) -> RegistrationRecord | None:
        key = self.key(model, str(version))
        if not self.store.exists(key):
            return None
        try:
            raw = json.loads(self.store.get_text(key))
            return RegistrationRecord(**raw)
        except (ValueError, TypeError) as exc:
            raise RecordError(
                f"registration record {key} is not a record ({exc})",
                fix="restore it from a backup of the store, or vouch for the version's files "
                "again with `cvloop registry trust`",
            ) from None

    def any(self, model: str) -> bool:
        """Whether the store holds a record of any version of ``model``."""
        return bool(self.store.keys(f"{RECORDS_PREFIX}/{model}/"))

    def delete(self, model: str, version: str) -> None:
        self.store.delete(self.key(model, str(version)))
