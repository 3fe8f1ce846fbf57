"""Schema versions and label migrations: add, rename, retire (drop or merge), refusals."""

from __future__ import annotations

import pytest

from cvloop.errors import CvloopError
from cvloop.schema import ClassSchema, SchemaChange, apply, migrate_label_text

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
