"""Registration records in a store: written, read back, removed; a damaged one is named."""

from __future__ import annotations

import pytest

from cvloop.adapters.storage import LocalStorage
from registry.records import RecordError, RegistrationRecord, RegistrationRecords


def test_a_record_round_trips_and_is_keyed_by_model_and_version(tmp_path):
    recs = RegistrationRecords(LocalStorage(tmp_path))
    rec = RegistrationRecord("det", "7", "run-1", {"pt": "a" * 64, "onnx": "b" * 64})
    recs.write(rec)
    assert (tmp_path / "registry-records" / "det" / "v7.json").is_file()
    back = recs.read("det", "7")
    assert back.sha256 == rec.sha256 and back.run_id == "run-1" and back.recorded_at
    assert recs.read("det", "8") is None and recs.read("other", "7") is None
    recs.delete("det", "7")
    assert recs.read("det", "7") is None
    recs.delete("det", "7")  # gone already: not an error


def test_a_damaged_record_is_named_with_the_fix(tmp_path):
    store = LocalStorage(tmp_path)
    store.put_text("registry-records/det/v3.json", '{"model": "det", "truncated')
    with pytest.raises(RecordError) as info:
        RegistrationRecords(store).read("det", "3")
    assert "registry-records/det/v3.json is not a record" in info.value.message
    assert "cvloop registry trust" in info.value.fix
