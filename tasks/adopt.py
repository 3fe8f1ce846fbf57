"""Adoption (``cvloop adopt``): a team's checkpoint, labeled data and holdout as version 1."""

from __future__ import annotations

from prefect import task

from cvloop.stages.adopt import (
    adopt_schema,
    adopted_lineage,
    adopted_tags,
    adoption_report,
    inspect_adopted,
    prepare_adopted_model,
    refuse_foreign_state,
    start_adoption,
)
from cvloop.stages.adopt_data import import_adopted_data
from tasks import stage_task

start_adoption_task = stage_task(start_adoption, name="start_adoption", retries=2,
                                 retry_delay_seconds=3)  # fmt: skip
inspect_adopted_task = stage_task(inspect_adopted, name="inspect_checkpoint")
refuse_foreign_state_task = stage_task(refuse_foreign_state, name="refuse_foreign_state")
adopt_schema_task = stage_task(adopt_schema, name="adopt_schema")
import_adopted_data_task = stage_task(import_adopted_data, name="import_labeled_data")
prepare_adopted_model_task = stage_task(prepare_adopted_model, name="prepare_adopted_model")
adopted_lineage_task = stage_task(adopted_lineage, name="adopted_lineage")
adopted_tags_task = task(adopted_tags, name="adopted_tags")


@task(name="publish_adoption_report")
def publish_adoption_report(*args) -> str:
    from prefect.artifacts import create_markdown_artifact

    md = adoption_report(*args)
    create_markdown_artifact(markdown=md, key="adoption", description="adopted champion")
    return md
