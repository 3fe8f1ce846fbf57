"""Schema versions and label migrations: add, rename, retire (drop or merge), refusals."""

from __future__ import annotations

import pytest

from cvloop.core.errors import CvloopError
from cvloop.core.schema import ClassSchema, SchemaChange, apply, migrate_label_text
from tests.conftest import context

V1 = ClassSchema(1, ("crate", "barrel", "cone"))
LABELS = "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n2 0.7 0.7 0.05 0.05\n1 0.2 0.8 0.1 0.1\n"


def test_add_appends_an_id_and_leaves_labels_alone():
    v2, mapping = apply(V1, SchemaChange("add", "pallet", who="ada", why="new sites"))
    assert v2.classes == ("crate", "barrel", "cone", "pallet") and v2.version == 2
    assert v2.label_policy_version == 2 and v2.tag == "schema-v2"
    text, counts = migrate_label_text(LABELS, mapping, V1, v2)
    assert text == LABELS
    assert counts.kept == {"crate": 1, "barrel": 2, "cone": 1} and not counts.dropped
    assert v2.history[-1].who == "ada" and v2.history[-1].when


def test_rename_keeps_ids_and_policy():
    v2, mapping = apply(V1, SchemaChange("rename", "cone", new_name="traffic-cone"))
    assert v2.classes == ("crate", "barrel", "traffic-cone")
    assert v2.label_policy_version == 1
    text, counts = migrate_label_text(LABELS, mapping, V1, v2)
    assert text == LABELS and counts.kept["traffic-cone"] == 1 and not counts.merged


def test_retire_drops_its_boxes_and_shifts_later_ids():
    v2, mapping = apply(V1, SchemaChange("retire", "barrel"))
    assert v2.classes == ("crate", "cone") and mapping == {0: 0, 1: None, 2: 1}
    text, counts = migrate_label_text(LABELS, mapping, V1, v2)
    assert text == "0 0.5 0.5 0.2 0.2\n1 0.7 0.7 0.05 0.05\n"
    assert counts.dropped == {"barrel": 2} and counts.kept == {"crate": 1, "cone": 1}


def test_retire_with_merge_moves_the_boxes_to_the_target():
    v2, mapping = apply(V1, SchemaChange("retire", "barrel", merge_into="crate"))
    text, counts = migrate_label_text(LABELS, mapping, V1, v2)
    assert [line.split()[0] for line in text.splitlines()] == ["0", "0", "1", "0"]
    assert counts.merged == {"barrel": 2} and counts.kept == {"crate": 3, "cone": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (SchemaChange("rename", "cone", new_name="crate"), "'crate' is already a class"),
        (SchemaChange("add", "crate"), "already exists"),
        (SchemaChange("rename", "forklift", new_name="lift"), "not a class of schema-v1"),
        (SchemaChange("retire", "barrel", merge_into="barrel"), "not another class"),
        (SchemaChange("add", "Pallet Jack"), "invalid class name"),
        (SchemaChange("drop", "cone"), "unknown schema change"),
    ],
)
def test_refused_changes_say_why_and_the_fix(change, message):
    with pytest.raises(CvloopError, match=message) as err:
        apply(V1, change)
    assert err.value.fix


def test_a_change_applied_twice_is_refused_not_migrated_twice():
    v2, _ = apply(V1, SchemaChange("rename", "cone", new_name="traffic-cone"))
    with pytest.raises(CvloopError, match="already ran is done"):
        apply(v2, SchemaChange("rename", "cone", new_name="traffic-cone"))


def test_a_label_outside_the_schema_names_the_file():
    _, mapping = apply(V1, SchemaChange("add", "pallet"))
    with pytest.raises(CvloopError, match=r"labels/train/a\.txt:2: class id 7"):
        migrate_label_text("0 .5 .5 .1 .1\n7 .5 .5 .1 .1\n", mapping, V1, V1, "labels/train/a.txt")


def test_schema_round_trips_through_its_dict():
    v2, _ = apply(V1, SchemaChange("retire", "barrel", merge_into="crate", why="same handling"))
    assert ClassSchema.from_dict(v2.to_dict()) == v2


# ---- the schema log: every version, composed mappings, names across versions -----------


def _log():
    from cvloop.core.schema import SchemaLog

    log = SchemaLog.initial(["crate", "barrel", "cone"])
    for change in (
        SchemaChange("add", "pallet", cameras=("cam-03",), seed_keys=("seeds/pallet/a.jpg",)),
        SchemaChange("rename", "barrel", new_name="drum"),
        SchemaChange("retire", "cone", merge_into="crate"),
    ):
        log, new = log.applied(change)
        assert new
    return log


def test_the_log_composes_mappings_and_names_across_versions():
    from cvloop.core.schema import SchemaLog

    log = _log()
    assert log.current.classes == ("crate", "drum", "pallet") and log.current.version == 4
    # v1 ids -> v4 ids: crate 0, barrel 1 (now drum), cone merged into crate
    assert log.mapping(1) == {0: 0, 1: 1, 2: 0}
    assert log.mapping(2) == {0: 0, 1: 1, 2: 0, 3: 2}  # pallet shifted down after cone left
    # the head rows a v1 model's classes pass on; a merged class leaves the target's own row
    assert log.sources(["crate", "barrel", "cone"]) == {"crate": "crate", "drum": "barrel"}
    assert log.sources(["not", "a", "version"]) == {}
    assert log.translate() == {
        "crate": "crate", "barrel": "drum", "cone": "crate", "pallet": "pallet", "drum": "drum"
    }  # fmt: skip
    # round trip through schema.yaml keeps every version and the seeds/cameras of the add
    again = SchemaLog.from_yaml(log.to_yaml())
    assert [v.classes for v in again.versions] == [v.classes for v in log.versions]
    assert again.get(2).history[-1].cameras == ("cam-03",)
    assert again.mapping(1) == log.mapping(1)


def test_a_rerun_of_the_last_request_is_not_a_second_change():
    log = _log()
    same, new = log.applied(SchemaChange("retire", "cone", merge_into="crate", who="someone"))
    assert not new and same is log
    with pytest.raises(CvloopError, match="cannot rename 'drum' to 'crate'"):
        log.applied(SchemaChange("rename", "drum", new_name="crate"))


def test_a_hand_edited_log_is_refused():
    from cvloop.core.schema import SchemaLog

    text = _log().to_yaml().replace("- drum\n  - pallet", "- pallet\n  - drum", 1)
    with pytest.raises(CvloopError, match="does not follow"):
        SchemaLog.from_yaml(text).mapping(1)
    with pytest.raises(CvloopError, match="not a cvloop schema log"):
        SchemaLog.from_yaml("versions: 3")


def _folder(root, labels: dict[str, str]):
    import json

    from cvloop.adapters.datasets import write_data_yaml

    for fid, text in labels.items():
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train" / f"{fid}.txt").write_text(text)
    entry = dict(sha256="0" * 64, split="train", source_key="k", camera="cam-01", ts_ms=0,
                 dhash="0" * 16, boxes=0, label_source="reviewed", label_policy_version=1,
                 added_in="dataset-v1")  # fmt: skip
    (root / "manifest.jsonl").write_text(
        "".join(json.dumps({**entry, "id": fid}) + "\n" for fid in labels)
    )
    write_data_yaml(root, ["crate", "barrel", "cone"], ["train"])


def test_a_folder_migrates_once_and_a_crash_mid_swap_resumes(tmp_path, monkeypatch):
    import os

    import yaml

    from cvloop.adapters.datasets import folder_schema, migrate_folder, read_manifest

    log = _log()
    root = tmp_path / "ds"
    _folder(root, {"a": LABELS, "b": "2 0.5 0.5 0.1 0.1\n", "c": ""})
    real = os.replace
    calls = []

    def crash_after_first_rename(src, dst):
        real(src, dst)
        calls.append(dst)
        if str(dst).endswith("labels.schema-v1"):
            raise RuntimeError("worker died")

    monkeypatch.setattr(os, "replace", crash_after_first_rename)
    with pytest.raises(RuntimeError):
        migrate_folder(root, log, "dataset-v2")
    monkeypatch.setattr(os, "replace", real)
    assert folder_schema(root) == 1 and not (root / "labels").exists()  # mid-swap
    migrate_folder(root, log, "dataset-v2")  # resumes: finishes the swap
    assert folder_schema(root) == 4 and (root / "VERSION").read_text() == "dataset-v2\n"
    # v1 -> v4: crate 0, barrel->drum 1, cone merged into crate 0
    assert (root / "labels/train/a.txt").read_text() == (
        "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n0 0.7 0.7 0.05 0.05\n1 0.2 0.8 0.1 0.1\n"
    )
    assert (root / "labels/train/b.txt").read_text() == "0 0.5 0.5 0.1 0.1\n"
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    assert names == {0: "crate", 1: "drum", 2: "pallet"}
    assert {e.id: e.boxes for e in read_manifest(root)} == {"a": 4, "b": 1, "c": 0}
    assert not list(tmp_path.glob("ds/labels.*"))
    # a second run changes nothing (the labels are not mapped twice)
    again = migrate_folder(root, log, "dataset-v3")
    assert again.already and (root / "VERSION").read_text() == "dataset-v2\n"
    assert (root / "labels/train/b.txt").read_text() == "0 0.5 0.5 0.1 0.1\n"


def test_a_clean_migration_reports_its_counts(tmp_path):
    from cvloop.adapters.datasets import migrate_folder

    root = tmp_path / "ds"
    _folder(root, {"a": LABELS, "b": "2 0.5 0.5 0.1 0.1\n"})
    out = migrate_folder(root, _log(), "dataset-v2")
    assert out.counts.merged == {"cone": 2}
    assert out.counts.kept == {"crate": 3, "drum": 2}  # 1 crate + 2 merged cones
    assert out.labels_rewritten == 2 and out.frames == 2


def test_a_seed_key_stays_a_key_and_a_seed_file_is_stored_by_content(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from cvloop.stages.schema import store_seeds

    monkeypatch.setenv("CVLOOP_STORAGE_URI", str(tmp_path / "store"))
    store = context().store
    jpeg = cv2.imencode(".jpg", np.full((32, 32, 3), 90, np.uint8))[1].tobytes()
    key = "frames/cam-03/2026-11-20/1795651200000.jpg"
    store.put_bytes(key, jpeg)
    png = tmp_path / "pallet.png"
    cv2.imwrite(str(png), np.full((32, 32, 3), 30, np.uint8))
    keys = store_seeds(context(), "pallet", [key, str(png)])
    assert key in keys and len(keys) == 2
    copied = next(k for k in keys if k != key)
    assert copied.startswith("seeds/pallet/") and copied.endswith(".jpg")
    assert store.keys("seeds/") == [copied]  # the frame-store seed is not stored twice
    assert store_seeds(context(), "pallet", [key, str(png)]) == keys  # idempotent
    with pytest.raises(CvloopError, match="neither a file here nor a key") as err:
        store_seeds(context(), "pallet", ["frames/cam-03/2026-11-20/missing.jpg"])
    assert "frames/cam-03/" in err.value.fix
    store.put_bytes("frames/cam-03/2026-11-20/broken.jpg", b"not a jpeg")
    with pytest.raises(CvloopError, match="not a readable image"):
        store_seeds(context(), "pallet", ["frames/cam-03/2026-11-20/broken.jpg"])
