"""The retrain's own bookkeeping: at most one open retrain (cvloop/stages/open_retrain.py)."""

from __future__ import annotations

from cvloop.stages.open_retrain import claim_open_retrain, release_open_retrain
from tasks import stage_task

claim_open_retrain_task = stage_task(
    claim_open_retrain, name="claim_open_retrain", retries=2, retry_delay_seconds=[2, 10]
)

release_open_retrain_task = stage_task(
    release_open_retrain, name="release_open_retrain", retries=2, retry_delay_seconds=[2, 10]
)
