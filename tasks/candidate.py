"""Model half of the retrain (runbook steps 6–8): fine-tune a candidate from the champion,
score champion and candidate on the same frames, export and benchmark, gate, register.

The stage functions are ``cvloop/stages/{candidate,finetune,evaluate,export,gate,register}.py``;
each task passes run ids, paths and small records.
"""

from __future__ import annotations

from prefect import task

from cvloop.core.gates import GateReport
from cvloop.stages.candidate import holdout_drift_tags, slice_tags, training_data
from cvloop.stages.evaluate import Evaluations, evaluate_pair
from cvloop.stages.export import Exported, export_and_benchmark
from cvloop.stages.finetune import fine_tune
from cvloop.stages.gate import comparison_markdown, gate_candidate
from cvloop.stages.register import candidate_lineage, record_candidate, register_candidate
from tasks import stage_task


@task(name="publish_gate_report")
def publish_gate_report(
    gate_report: GateReport, evals: Evaluations, exported: Exported, version: str, run_id: str
) -> str:
    from prefect.artifacts import create_markdown_artifact

    from cvloop.context import current

    md = comparison_markdown(gate_report, evals, exported, version)
    current().tracker.log_text(run_id, md, "gate/comparison.md")
    create_markdown_artifact(markdown=md, key="gate-report", description=f"candidate v{version}")
    return md


fine_tune_task = stage_task(fine_tune, name="fine_tune", persist_result=True)

evaluate_pair_task = stage_task(evaluate_pair, name="evaluate_pair", persist_result=True)

export_and_benchmark_task = stage_task(
    export_and_benchmark, name="export_and_benchmark", persist_result=True
)

gate_candidate_task = stage_task(gate_candidate, name="gate_candidate", persist_result=True)

register_candidate_task = stage_task(register_candidate, name="register_candidate")

candidate_lineage_task = stage_task(candidate_lineage, name="candidate_lineage")

slice_tags_task = task(slice_tags, name="slice_tags")

training_data_task = stage_task(training_data, name="training_data", persist_result=True)

holdout_drift_tags_task = task(holdout_drift_tags, name="holdout_drift_tags")

record_candidate_task = stage_task(record_candidate, name="record_candidate")
