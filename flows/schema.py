"""Change the class schema: add, rename or retire a class, as one versioned operation.

1. the change is applied to the schema log (``schema.yaml`` in the data repository; a
   refused change — renaming to an existing class, retiring an unknown one — stops here with
   the fix, before anything is written); 2. the labels of the dataset and the holdout are
   migrated (ids remapped; retired boxes dropped or merged, with counts) into dataset v_n+1
   and holdout v_k+1, committed with ``schema.yaml`` and tagged ``schema-v<n>``; 3. the open
   Label Studio review projects get the new labels; 4. for a new class, the operator's seed
   frames are kept in the frame store: the next retrain routes them, and the low-confidence
   frames of the cameras that show the class, to review. The next fine-tune resizes the
   head (kept classes keep their weights); the gates judge a new class against its own
   minimum AP.

Running the same request again finishes a crashed run, or changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow

from cvloop.core.schema import SchemaChange
from cvloop.stages.schema import SchemaChangeResult
from flows.hooks import publish_failure
from tasks.schema import (
    migrate_and_version_task,
    plan_change_task,
    publish_schema_report,
    store_seeds_task,
    update_label_studio_task,
)


@flow(name="schema-change", log_prints=True, on_failure=[publish_failure])
def schema_change(
    op: str,
    name: str,
    new_name: str | None = None,
    merge_into: str | None = None,
    why: str = "",
    who: str = "",
    seeds: list[str] | None = None,
    cameras: list[str] | None = None,
) -> dict:
    """``op``: add | rename | retire. ``seeds`` (add): example frames of the new class (image
    files or frame-store keys); ``cameras`` (add): the cameras that start to show it."""
    seed_keys = store_seeds_task(name, seeds) if op == "add" and seeds else []
    change = SchemaChange(
        op, name, new_name, merge_into, why, who, seed_keys=tuple(seed_keys),
        cameras=tuple(cameras or ()),
    )  # fmt: skip
    log, applied = plan_change_task(change)
    schema = log.current
    print(
        f"{schema.tag}: {schema.history[-1].describe()} -> classes {list(schema.classes)}"
        + ("" if applied else " (the same request already ran: finishing or confirming it)")
    )
    versions = migrate_and_version_task(log, applied)
    projects = update_label_studio_task(log)
    result = SchemaChangeResult(
        asdict(schema.history[-1]),
        schema.to_dict(),
        applied,
        versions["migrations"],
        versions.get("dataset"),
        versions.get("holdout"),
        projects,
        list(schema.history[-1].seed_keys),
    )
    publish_schema_report(result)
    return result.summary()


if __name__ == "__main__":
    schema_change("add", "pallet")
