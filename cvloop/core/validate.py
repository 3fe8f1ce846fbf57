"""Annotation checks before a frame enters a dataset version (Great Expectations 1.x).

Every reviewed frame becomes rows of one table (a row per box; a frame without boxes gets
one row with empty box columns, so its image is still checked) and one expectation suite
runs over it. Each expectation carries the name of its rule; a frame that breaks any rule
is quarantined whole, with the rule and the offending values, and never reaches the dataset
(a frame with one box dropped would teach the model that the object is background).

Rules: ``image_readable``, ``class_in_schema``, ``coordinates_finite`` (a NaN, an infinity
or a missing coordinate: Great Expectations' range checks skip NaN as null, so it is checked
on its own), ``box_inside_image`` (with a half-pixel
tolerance), ``not_degenerate`` (at least one pixel wide and high), ``min_box_area``,
``max_box_area``, ``no_duplicate_box`` (two boxes of a class with IoU >= ``duplicate_iou``).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cvloop.core.frames import LabelBox
from cvloop.core.review import iou

RULES = (
    "image_readable",
    "class_in_schema",
    "coordinates_finite",
    "box_inside_image",
    "not_degenerate",
    "min_box_area",
    "max_box_area",
    "no_duplicate_box",
)


@dataclass(frozen=True)
class FrameToCheck:
    frame: str  # content hash
    key: str
    image_readable: bool
    width: int
    height: int
    boxes: list[LabelBox]


@dataclass(frozen=True)
class Violation:
    frame: str
    key: str
    rule: str
    detail: str


@dataclass(frozen=True)
class ValidationResult:
    valid: list[str]  # frame hashes that passed every rule
    violations: list[Violation]
    rows: int
    rule_failures: dict[str, int]

    @property
    def quarantined(self) -> list[str]:
        return sorted({v.frame for v in self.violations})


def _table(frames: Sequence[FrameToCheck], duplicate_iou: float):
    import pandas as pd

    rows = []
    for f in frames:
        if not f.boxes:
            rows.append({"frame": f.frame, "key": f.key, "image_readable": f.image_readable})
            continue
        for i, b in enumerate(f.boxes):
            finite = all(math.isfinite(v) for v in (b.cx, b.cy, b.w, b.h))
            dup = finite and any(
                o.label == b.label and iou(o, b) >= duplicate_iou for o in f.boxes[:i]
            )
            rows.append(
                {
                    "frame": f.frame,
                    "key": f.key,
                    "image_readable": f.image_readable,
                    "label": b.label,
                    "finite": finite,
                    "coordinates": f"{b.cx:g},{b.cy:g},{b.w:g},{b.h:g}",
                    "x1": b.cx - b.w / 2,
                    "y1": b.cy - b.h / 2,
                    "x2": b.cx + b.w / 2,
                    "y2": b.cy + b.h / 2,
                    "w_px": b.w * f.width,
                    "h_px": b.h * f.height,
                    "area": b.w * b.h,
                    "duplicate": dup,
                }
            )
    df = pd.DataFrame(
        rows,
        columns=[
            "frame", "key", "image_readable", "label", "finite", "coordinates",
            "x1", "y1", "x2", "y2", "w_px", "h_px", "area", "duplicate",
        ],
    )  # fmt: skip
    df["row"] = range(len(df))
    # half a pixel of slack on the edges: reviewers snap to the border
    df["slack"] = [0.5 / max(f.width, 1) for f in frames for _ in (f.boxes or [None])]
    return df


def _suite(gx, classes: Sequence[str], min_area: float, max_area: float) -> list:
    E = gx.expectations
    return [
        E.ExpectColumnValuesToBeInSet(
            column="image_readable", value_set=[True], meta={"rule": "image_readable"}
        ),
        E.ExpectColumnValuesToBeInSet(
            column="label", value_set=list(classes), meta={"rule": "class_in_schema"}
        ),
        E.ExpectColumnValuesToBeInSet(
            column="finite", value_set=[True], meta={"rule": "coordinates_finite"}
        ),
        *[
            E.ExpectColumnValuesToBeBetween(
                column=c, min_value=lo, max_value=hi, meta={"rule": "box_inside_image"}
            )
            for c, lo, hi in (
                ("x1_s", 0, None),
                ("y1_s", 0, None),
                ("x2_s", None, 1),
                ("y2_s", None, 1),
            )
        ],
        *[
            E.ExpectColumnValuesToBeBetween(column=c, min_value=1, meta={"rule": "not_degenerate"})
            for c in ("w_px", "h_px")
        ],
        E.ExpectColumnValuesToBeBetween(
            column="area", min_value=min_area, meta={"rule": "min_box_area"}
        ),
        E.ExpectColumnValuesToBeBetween(
            column="area", max_value=max_area, meta={"rule": "max_box_area"}
        ),
        E.ExpectColumnValuesToBeInSet(
            column="duplicate", value_set=[False], meta={"rule": "no_duplicate_box"}
        ),
    ]


def validate_annotations(
    frames: Sequence[FrameToCheck],
    classes: Sequence[str],
    *,
    min_box_area: float,
    max_box_area: float,
    duplicate_iou: float,
) -> ValidationResult:
    """Run the annotation suite; returns the valid frames and every violation."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with contextlib.redirect_stderr(io.StringIO()):  # GX draws progress bars on stderr
        import great_expectations as gx

    df = _table(frames, duplicate_iou)
    # shift by the slack so that "inside" is a plain bound check on a column
    df["x1_s"] = df["x1"] + df["slack"]
    df["y1_s"] = df["y1"] + df["slack"]
    df["x2_s"] = df["x2"] - df["slack"]
    df["y2_s"] = df["y2"] - df["slack"]
    ctx = gx.get_context(mode="ephemeral")
    with contextlib.suppress(Exception):
        ctx.variables.progress_bars = {"globally": False}
    batch_def = (
        ctx.data_sources.add_pandas("cvloop")
        .add_dataframe_asset("annotations")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name="cvloop-annotations"))
    for exp in _suite(gx, classes, min_box_area, max_box_area):
        suite.add_expectation(exp)
    vd = ctx.validation_definitions.add(
        gx.ValidationDefinition(name="cvloop-annotations", data=batch_def, suite=suite)
    )
    with contextlib.redirect_stderr(io.StringIO()):
        result = vd.run(
            batch_parameters={"dataframe": df},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["row"]},
        )
    violations = []
    failures: dict[str, int] = dict.fromkeys(RULES, 0)
    for res in result.results:
        rule = res.expectation_config.meta["rule"]
        column = res.expectation_config.kwargs["column"]
        for hit in res.result.get("unexpected_index_list") or []:
            row = df.iloc[int(hit["row"])]
            name = column.removesuffix("_s")
            value = row[name]
            if column == "finite":  # the coordinates themselves say more than "False"
                name, value = "cx,cy,w,h", row["coordinates"]
            label = row["label"] if isinstance(row["label"], str) else "-"
            violations.append(
                Violation(row["frame"], row["key"], rule, f"{name}={_fmt(value)} (box {label})")
            )
            failures[rule] += 1
    bad = {v.frame for v in violations}
    valid = [f.frame for f in frames if f.frame not in bad]
    return ValidationResult(valid, violations, len(df), failures)


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
