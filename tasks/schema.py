"""Schema stage: the class list as versioned data (``schema.yaml`` in the data repository)
and the operations that change it: migrate the labels of the dataset and the holdout into
new versions, update the open Label Studio projects, keep the operator's seed frames."""

from __future__ import annotations

import json

from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from cvloop.stages.schema import (
    SchemaChangeResult,
    current_schema,
    migrate_and_version,
    new_class_routes,
    plan_change,
    store_seeds,
    update_label_studio,
)
from tasks import stage_task


@task(name="publish_schema_report")
def publish_schema_report(result: SchemaChangeResult) -> str:
    from prefect.artifacts import create_markdown_artifact

    s = result.summary()
    lines = [
        f"# Class schema: {s['change']} → schema-v{s['schema_version']}",
        "",
        "re-run of a change that already ran: nothing changed" if not s["applied"] else "",
        f"classes: {', '.join(s['classes'])} (label policy v{s['label_policy_version']})",
        "",
        "| folder | new version | frames | labels rewritten | boxes kept | dropped | merged |",
        "|---|---|---|---|---|---|---|",
    ]
    for folder, m in s["migrated"].items():
        version = s["dataset_version"] if folder == "datasets" else s["holdout_version"]
        lines.append(
            f"| {folder} | {version or 'unchanged'} | {m['frames']} | {m['labels_rewritten']} | "
            f"{json.dumps(m['kept'])} | {json.dumps(m['dropped'])} | {json.dumps(m['merged'])} |"
        )
    if s["label_studio_projects"]:
        lines += ["", "| open Label Studio project | labels now |", "|---|---|"]
        lines += [
            f"| [{p['title']}]({p['url']}) | {', '.join(p['labels'])} |"
            for p in s["label_studio_projects"]
        ]
    if s["seed_frames"]:
        lines += ["", f"{s['seed_frames']} seed frames go to the next retrain's review queue."]
    md = "\n".join(lines) + "\n"
    create_markdown_artifact(markdown=md, key="schema-change", description=s["change"])
    return md


store_seeds_task = stage_task(store_seeds, name="store_seeds")

plan_change_task = stage_task(plan_change, name="plan_schema_change")

migrate_and_version_task = stage_task(migrate_and_version, name="migrate_and_version")

update_label_studio_task = stage_task(
    update_label_studio, name="update_label_studio", retries=2, retry_delay_seconds=[10, 60]
)

# read fresh every time (never a cached result: the schema may change during a run)
current_schema_task = stage_task(current_schema, name="current_schema", cache_policy=NO_CACHE)

new_class_routes_task = stage_task(new_class_routes, name="new_class_routes", cache_policy=NO_CACHE)
