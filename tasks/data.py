"""Data stage: baseline frames, dataset and holdout versions (plain functions + @task wrappers)."""

from __future__ import annotations

from prefect import task

from cvloop.stages.data import build_baseline_data, version_data

build_baseline_data_task = task(build_baseline_data, name="build_baseline_data")

version_data_task = task(version_data, name="version_data")
