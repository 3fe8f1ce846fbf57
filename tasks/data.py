"""Data stage: dataset and holdout versions in the data repository."""

from __future__ import annotations

from cvloop.stages.data import version_data
from tasks import stage_task

version_data_task = stage_task(version_data, name="version_data")
