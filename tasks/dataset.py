"""Dataset stage (runbook steps 5 and 9): reviewed annotations out of Label Studio, checked
(Great Expectations), merged into dataset v_n+1 and holdout v_k+1, versioned with DVC."""

from __future__ import annotations

import json

from prefect import task

from cvloop.stages.dataset import (
    NewVersions,
    ValidatedReviews,
    export_reviews,
    record_data_steps,
    validate_reviews,
    version_reviewed_data,
)
from tasks import stage_task


@task(name="publish_validation_report")
def publish_validation_report(v: ValidatedReviews) -> str:
    from prefect.artifacts import create_markdown_artifact

    from cvloop.context import current

    s = v.summary
    lines = [
        "# Annotation validation (Great Expectations)",
        "",
        "| reviewed | valid | quarantined | boxes checked |",
        "|---|---|---|---|",
        f"| {s['reviewed']} | {s['valid']} | {s['quarantined']} | {s['boxes_checked']} |",
    ]
    violations = json.loads(current().store.get_text(v.quarantine_key))
    if violations:
        lines += ["", "## Quarantined frames", "", "| frame | rule | detail |", "|---|---|---|"]
        lines += [f"| {x['key']} | {x['rule']} | {x['detail']} |" for x in violations[:300]]
    md = "\n".join(lines) + "\n"
    create_markdown_artifact(markdown=md, key="annotation-quarantine", description="validation")
    return md


@task(name="publish_dataset_report")
def publish_dataset_report(v: NewVersions) -> str:
    from prefect.artifacts import create_markdown_artifact

    d, h = v.dataset, v.holdout
    lines = [
        f"# {d['name']}",
        "",
        "| version | git rev | DVC md5 | files | added |",
        "|---|---|---|---|---|",
        f"| {d['name']} | {d['git_rev'][:10]} | {d['dvc_md5']} | {d['files']} | "
        f"train {v.added['train']}, val {v.added['val']} |",
    ]
    if h:
        lines.append(
            f"| {h['name']} | {h['git_rev'][:10]} | {h['dvc_md5']} | {h['files']} | "
            f"{v.added['holdout']} drift frames; {v.added.get('retired', 0)} oldest drift "
            "frames retired (never trained on) |"
        )
    lines += [
        "",
        f"Held back from training (near-duplicates of holdout frames, or of their capture "
        f"events): {v.held_back}; already in a version: {v.already_present}.",
        "",
        "Leakage, holdout (and retired holdout frames) vs training: "
        + ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in v.leakage.items())
        + " (goal: 0 each)",
    ]
    md = "\n".join(lines) + "\n"
    create_markdown_artifact(markdown=md, key="dataset-version", description=d["name"])
    return md


export_reviews_task = stage_task(export_reviews, name="export_reviews", persist_result=True)

validate_reviews_task = stage_task(validate_reviews, name="validate_reviews", persist_result=True)

version_reviewed_data_task = stage_task(
    version_reviewed_data, name="version_reviewed_data", persist_result=True
)

record_data_steps_task = stage_task(record_data_steps, name="record_data_steps")
