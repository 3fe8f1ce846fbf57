"""`cvloop adopt` against the real local services, with a detector cvloop did not make
(tests/external_detector.py: plain Ultralytics, other classes, 640x480 frames, COCO labels),
in a project of its own on the session's services: its own registered model, experiment,
data repository, DVC remote and frame store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TINY

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The team's files, made in a process of their own by plain Ultralytics calls."""
    root = tmp_path_factory.mktemp("team")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "external_detector.py"),
                           str(root)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    return {k: Path(v) if k != "frames" else int(v) for k, v in out.items()}


def _project(stack, home: Path, name: str) -> dict:
    """A fresh project on the session's services (what `cvloop init` sets up)."""
    from cvloop.config.params import load_params, with_overrides

    home.mkdir(parents=True)
    repo = home / "data-repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    over = {**TINY, "holdout": {"min_frames": 10}, "registry": {"model_name": name,
                                                                  "experiment": name}}  # fmt: skip
    p = with_overrides(load_params(REPO / "params.yaml"), over)
    (home / "params.yaml").write_text(yaml.safe_dump(p.model_dump(by_alias=True, mode="json")))
    return {**stack.env, "CVLOOP_PARAMS": str(home / "params.yaml"),
            "CVLOOP_DATA_REPO": str(repo), "CVLOOP_DVC_REMOTE": str(home / "dvc-remote"),
            "CVLOOP_STORAGE_URI": str(home / "store")}  # fmt: skip


def _git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True).stdout


def _versions(stack, name: str) -> list:
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=stack.mlflow_uri, registry_uri=stack.mlflow_uri)
    return c.search_model_versions(f"name='{name}'")


@pytest.fixture(scope="module")
def adopted(stack, team, tmp_path_factory):
    """As a team starts: `cvloop init` makes the project (its classes and imgsz read from
    the checkout), then `cvloop adopt` from inside it, on the session's services."""
    project = tmp_path_factory.mktemp("dock") / "dock"
    out = stack.cli("init", str(project), "--checkpoint", str(team["checkpoint"])).stdout
    assert "write     params.yaml" in out and "write     .git" in out
    env = {k: v for k, v in stack.env.items()
           if k not in ("CVLOOP_PARAMS", "CVLOOP_DATA_REPO", "CVLOOP_DVC_REMOTE")}  # fmt: skip
    env.update(CVLOOP_PROJECT_DIR=str(project), CVLOOP_DATA_REPO=str(project),
               CVLOOP_STORAGE_URI=str(project / "store"),
               CVLOOP_DVC_REMOTE=str(project / "dvc-remote"))  # fmt: skip
    proc = stack.cli("adopt", str(team["checkpoint"]), "--data", str(team["coco_json"]),
                     "--holdout-frames", "12", env=env, timeout=900)  # fmt: skip
    return env, proc


def test_the_teams_checkpoint_becomes_the_champion_with_what_it_says_and_nothing_invented(
    stack, team, adopted
):
    from cvloop.adapters.files import sha256_file

    env, proc = adopted
    assert "champion: version 1 (adopted)" in proc.stdout
    (mv,) = _versions(stack, "dock-detector")  # init named it after the project folder
    tags = mv.tags
    assert tags["cvloop.source"] == "adopted" and tags["cvloop.registration"] == "complete"
    assert tags["cvloop.sha256.pt"] == sha256_file(team["checkpoint"])
    assert tags["cvloop.adopt.sha256"] == tags["cvloop.sha256.pt"]
    assert tags["cvloop.adopt.origin"] == str(team["checkpoint"].resolve())
    assert json.loads(tags["cvloop.classes"]) == ["forklift", "pallet", "person"]
    assert tags["cvloop.imgsz"] == "192" and tags["cvloop.adopt.imgsz_from"] == "checkpoint"
    assert tags["cvloop.adopt.architecture"] == "yolov8n.yaml"
    assert tags["cvloop.adopt.onnx"] == "exported by cvloop"
    assert tags["cvloop.parent_version"] == "none"
    assert tags["cvloop.dataset.version"].startswith("unknown: trained outside cvloop")
    parity = json.loads(tags["cvloop.adopt.parity"])
    assert abs(parity["gap"]) < 0.05, parity  # .pt and ONNX agree on the holdout
    assert 0.0 <= float(tags["cvloop.holdout.map50_95"]) <= 1.0
    data = json.loads(tags["cvloop.adopt.dataset"])
    assert data["data"]["format"] == "coco" and data["data"]["valid"] == team["frames"]
    assert data["holdout"]["frames"] == 12
    # the file was hashed and recorded before anything loaded it: the run says so first
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=stack.mlflow_uri).get_run(mv.run_id)
    assert run.data.tags["cvloop.flow"] == "adopt" and run.info.status == "FINISHED"
    assert "holdout.map50_95" in run.data.metrics and "holdout_onnx.map50_95" in run.data.metrics
    # "which checkpoint is in prod, trained on what?"
    status = stack.cli("status", env=env).stdout
    assert "PRODUCTION  v1 100%" in status
    assert f"outside cvloop: adopted from {team['checkpoint'].resolve()}" in status
    assert tags["cvloop.sha256.pt"][:16] in status and "yolov8n.yaml at imgsz 192" in status


def test_dataset_and_holdout_v1_are_the_teams_frames_disjoint_and_versioned(adopted):
    from cvloop.adapters.datasets import read_manifest

    env, _ = adopted
    repo = Path(env["CVLOOP_DATA_REPO"])
    assert {"dataset-v1", "holdout-v1", "schema-v1"} <= set(_git(repo, "tag").split())
    schema = yaml.safe_load(_git(repo, "show", "dataset-v1:schema.yaml"))
    assert schema["versions"][0]["classes"] == ["forklift", "pallet", "person"]
    ds, ho = read_manifest(repo / "datasets"), read_manifest(repo / "holdout" / "data")
    assert len(ho) == 12 and len(ds) == 60 - 12
    assert not {e.sha256 for e in ds} & {e.sha256 for e in ho}
    assert {e.label_source for e in ds + ho} == {"imported"}
    assert all(e.source_key.endswith(".jpg") and "/images/dock-" in e.source_key for e in ds)
    names = yaml.safe_load((repo / "datasets" / "data.yaml").read_text())["names"]
    assert list(names.values()) == ["forklift", "pallet", "person"]
    assert "adopt " in _git(repo, "tag", "-n1", "dataset-v1")
    assert _git(repo, "status", "--porcelain", "--untracked-files=no").strip() == ""
    store = Path(env["CVLOOP_STORAGE_URI"])
    manifest = json.loads((store / "rollout" / "manifest.json").read_text())
    assert manifest["allocations"] == [{"version": "1", "share": 100.0}]
    assert manifest["updated_by"] == "cvloop adopt"


def test_adopting_the_same_file_again_changes_nothing(stack, team, adopted):
    env, _ = adopted
    repo = Path(env["CVLOOP_DATA_REPO"])
    head = _git(repo, "rev-parse", "HEAD")
    proc = stack.cli("adopt", str(team["checkpoint"]), "--data", str(team["coco_json"]),
                     "--holdout-frames", "12", env=env)  # fmt: skip
    assert "adopted from this file; nothing to do" in proc.stdout + proc.stderr
    assert "champion: version 1 (adopted)" in proc.stdout
    assert len(_versions(stack, "dock-detector")) == 1
    assert _git(repo, "rev-parse", "HEAD") == head


def _coco_with(team, tmp_path, edit) -> Path:
    doc = json.loads(team["coco_json"].read_text())
    edit(doc)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    return path


def test_bad_input_is_refused_naming_the_input_and_nothing_is_half_registered(
    stack, team, tmp_path
):
    env = _project(stack, tmp_path / "refusals", "refused-detector")
    repo = Path(env["CVLOOP_DATA_REPO"])
    ckpt, coco = str(team["checkpoint"]), str(team["coco_json"])

    def refused(*args: str) -> str:
        proc = stack.cli("adopt", *args, env=env, check=False)
        assert proc.returncode != 0, proc.stdout[-2000:]
        return proc.stdout + proc.stderr

    # a classifier
    cls = tmp_path / "classifier.pt"
    subprocess.run([sys.executable, "-c", "import os; os.environ['YOLO_OFFLINE']='1'\n"
                    "from ultralytics import YOLO; YOLO('yolo11n-cls.yaml').save("
                    f"{str(cls)!r})"], check=True, capture_output=True)  # fmt: skip
    out = refused(str(cls), "--data", coco, "--imgsz", "192")
    assert "an image classifier, not an object detector" in out and "classifier.pt" in out
    # a corrupt checkpoint
    bad = tmp_path / "best.pt"
    bad.write_bytes(team["checkpoint"].read_bytes()[:100_000])
    out = refused(str(bad), "--data", coco)
    assert "not a loadable checkpoint" in out and "fix:" in out
    # a class the schema does not have: refused with the known ones and the fix
    renamed = _coco_with(team, tmp_path, lambda d: d["categories"][0].update(name="truck"))
    out = refused(ckpt, "--data", str(renamed), "--images", str(team["images"]),
                  "--holdout-frames", "12")  # fmt: skip
    assert "classes ['truck'] are not in the schema" in out and "--class-map truck=" in out
    assert "known: forklift, pallet, person" in out
    # a holdout that overlaps the data
    out = refused(ckpt, "--data", coco, "--holdout", coco)
    assert "overlaps the data" in out and "60 identical" in out
    # an empty holdout
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [],
                                 "categories": [{"id": 1, "name": "forklift"}]}))  # fmt: skip
    out = refused(ckpt, "--data", coco, "--holdout", str(empty), "--holdout-images",
                  str(team["images"]))  # fmt: skip
    assert "has no valid frame" in out
    # nothing was registered, versioned or routed by any of them
    assert _versions(stack, "refused-detector") == []
    assert _git(repo, "tag").split() == []
    assert not (Path(env["CVLOOP_STORAGE_URI"]) / "rollout" / "manifest.json").exists()


def test_a_class_map_and_bad_frames_are_reported_not_fatal(stack, team, tmp_path):
    """Names spelled differently map onto the schema; a missing image, a box outside its
    image and a size that does not match the file are quarantined with their reasons."""
    env = _project(stack, tmp_path / "mapped", "mapped-detector")
    images = tmp_path / "images"
    shutil.copytree(team["images"], images)

    def edit(doc):
        doc["categories"][2]["name"] = "Person"
        doc["images"][0]["file_name"] = "gone.jpg"
        doc["images"][1]["width"] = 1280
        a = next(a for a in doc["annotations"] if a["image_id"] == doc["images"][2]["id"])
        a["bbox"] = [600, 10, 200, 50]  # runs out of the 640 px frame

    coco = _coco_with(team, tmp_path, edit)
    stack.cli("adopt", str(team["checkpoint"]), "--data", str(coco), "--images", str(images),
              "--class-map", "Person=person", "--holdout-frames", "12", env=env)  # fmt: skip
    (mv,) = _versions(stack, "mapped-detector")
    data = json.loads(mv.tags["cvloop.adopt.dataset"])["data"]
    assert data["valid"] == 57 and data["quarantined"] == 3
    q = json.loads((Path(env["CVLOOP_STORAGE_URI"]) / "adopt" / mv.run_id / "quarantine.json")
                   .read_text())["data"]  # fmt: skip
    reasons = " | ".join(f"{x['path']}: {x['reason']}" for x in q)
    assert "gone.jpg: image listed but missing" in reasons
    assert "labeled on a 1280x480 image, the file is 640x480" in reasons
    assert "box_inside_image" in reasons
    assert "person" in data["boxes"] and "Person" not in data["boxes"]


def test_killed_after_versioning_and_run_again_it_ends_as_a_clean_run(stack, team, tmp_path):
    """SIGKILL once dataset-v1 and holdout-v1 are tagged (before the model is scored and
    registered); the same command again ends in the state a clean run reaches."""
    import os
    import signal
    import time

    from tests.conftest import CVLOOP

    env = _project(stack, tmp_path / "killed", "killed-detector")
    repo = Path(env["CVLOOP_DATA_REPO"])
    args = [str(team["checkpoint"]), "--data", str(team["coco_json"]), "--holdout-frames", "12"]
    proc = subprocess.Popen([CVLOOP, "adopt", *args], env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while "holdout-v1" not in _git(repo, "tag").split():
        assert proc.poll() is None, "the adoption ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _versions(stack, "killed-detector") == []  # killed before the registration
    stack.cli("adopt", *args, env=env)
    (mv,) = _versions(stack, "killed-detector")
    assert mv.tags["cvloop.registration"] == "complete" and mv.tags["cvloop.source"] == "adopted"
    assert sorted(_git(repo, "tag").split()) == ["dataset-v1", "holdout-v1", "schema-v1"]
    assert _git(repo, "status", "--porcelain").strip() == ""  # nothing half-written left
    from cvloop.adapters.datasets import read_manifest

    assert (
        len(read_manifest(repo / "datasets")) == 48
        and len(read_manifest(repo / "holdout" / "data")) == 12
    )
    manifest = json.loads(
        (Path(env["CVLOOP_STORAGE_URI"]) / "rollout" / "manifest.json").read_text()
    )
    assert manifest["allocations"] == [{"version": mv.version, "share": 100.0}]


def test_the_adopted_detector_is_served_monitored_and_fine_tuned_to_a_gated_candidate(
    stack, team, adopted, tmp_path
):
    """The team's day-to-day after adoption, on their own model (640x480 frames, imgsz 192,
    their classes): `cvloop serve` answers their cameras' frames and writes the inference
    log; `cvloop monitor` reads it (their classes and cameras, a darker week flagged);
    `cvloop candidate` fine-tunes v1 on dataset-v1 to a gated, registered v2 with its
    lineage, exports (ONNX, OpenVINO) and verdict; `cvloop status` answers for both."""
    import datetime as dt
    import signal
    import time

    import cv2
    import httpx
    import numpy as np

    from cvloop.adapters.inference_log import read_log
    from cvloop.adapters.storage import LocalStorage
    from cvloop.config.params import load_params, with_overrides
    from tests.conftest import CVLOOP, free_port

    env, _ = adopted
    port = free_port()
    # the team's model (3 epochs on 60 frames) is unsure of itself: log every box above 0.001
    # so the confidence signal has detections to compare
    sp = with_overrides(load_params(Path(env["CVLOOP_PROJECT_DIR"]) / "params.yaml"),
                        {"serve": {"conf": 0.001}})  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(sp.model_dump(by_alias=True, mode="json")))
    senv = dict(env, CVLOOP_SERVE_PORT=str(port), CVLOOP_SERVE_SPOOL=str(tmp_path / "spool"),
                CVLOOP_PARAMS=str(tmp_path / "params.yaml"))  # fmt: skip
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([CVLOOP, "serve"], env=senv, cwd=REPO, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    images = sorted(team["images"].glob("*.jpg"))[:30]
    dark = [cv2.imencode(".jpg", (cv2.imread(str(p)) * 0.3).astype(np.uint8))[1].tobytes()
            for p in images]  # fmt: skip
    bright = [p.read_bytes() for p in images]
    ref_day, cur_day = dt.date(2031, 2, 3), dt.date(2031, 2, 10)  # Mondays, a week apart
    sent = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        with httpx.Client(base_url=url, timeout=60) as c:
            for day, frames in ((ref_day, bright), (cur_day, dark)):
                for d in range(3):
                    for cam in ("dock-north", "dock-south"):
                        for i, body in enumerate(frames):
                            ts = dt.datetime.combine(day + dt.timedelta(days=d), dt.time(9),
                                                     dt.UTC) + dt.timedelta(seconds=i)  # fmt: skip
                            r = c.post("/v1/detect", content=body,
                                       headers={"content-type": "image/jpeg"},
                                       params={"camera": cam, "ts": ts.isoformat(),
                                               "frame_key": f"{cam}/{ts:%Y%m%d}/{i}.jpg"})  # fmt: skip
                            assert r.status_code == 200, r.text
                            assert r.json()["model_version"] == "1"
                            sent += 1
    finally:
        proc.send_signal(signal.SIGTERM)  # a clean stop: every worker uploads its journal
        proc.wait(timeout=60)
    rows = read_log(LocalStorage(Path(env["CVLOOP_STORAGE_URI"])), ref_day,
                    cur_day + dt.timedelta(days=3)).to_pylist()  # fmt: skip
    assert len(rows) == sent == 2 * 3 * 2 * len(images), log.read_text()[-2000:]
    labels = {d["label"] for r in rows for d in r["detections"]}
    assert labels and labels <= {"forklift", "pallet", "person"}, labels
    assert {r["camera"] for r in rows} == {"dock-north", "dock-south"}
    # the weekly check on the log the server wrote, in the team's terms
    mon = stack.cli("monitor", "--current-end", str(cur_day + dt.timedelta(days=7)),
                    "--current-days", "7", "--reference-start", str(ref_day),
                    "--reference-days", "7", "--no-event", env=env, timeout=600)  # fmt: skip
    assert "triggers fired:" in mon.stdout, mon.stdout[-2000:] + mon.stderr[-2000:]
    week = (cur_day + dt.timedelta(days=6)).isocalendar()
    html = (Path(env.get("CVLOOP_HOME", stack.home)) / "reports" / "monitor"
            / f"{week.year}{week.week:02d}" / "drift-report.html")  # fmt: skip
    assert html.exists()
    from mlflow import MlflowClient

    from cvloop.stages.monitor import MONITOR_EXPERIMENT

    client = MlflowClient(tracking_uri=stack.mlflow_uri)
    exp = client.get_experiment_by_name(MONITOR_EXPERIMENT)
    (run,) = client.search_runs([exp.experiment_id],
                                f"attributes.run_name = 'monitor-{week.year}{week.week:02d}'")  # fmt: skip
    metrics = run.data.metrics
    cams = {k.split(".")[3] for k in metrics if k.startswith("drift.") and ".camera." in k}
    classes = {k.split(".")[3] for k in metrics if k.startswith("drift.") and ".class." in k}
    assert cams == {"dock-north", "dock-south"}, sorted(metrics)[:20]
    assert classes and classes <= {"forklift", "pallet", "person"}, classes
    assert run.data.tags["cvloop.champion"] == "1"  # the adopted champion was monitored
    # the model half of the retrain on the adopted data: fine-tune v1, judge, gate, register
    cand = stack.cli("candidate", "--epochs", "1", env=env, check=False, timeout=900)
    assert cand.returncode in (0, 1), cand.stdout[-3000:] + cand.stderr[-3000:]
    out = json.loads(cand.stdout[cand.stdout.index("{") :])
    assert out["candidate_version"] == "2" and out["gate"] in ("passed", "rejected")
    v2 = next(v for v in _versions(stack, "dock-detector") if v.version == "2")
    assert v2.tags["cvloop.parent_version"] == "1" and v2.tags["cvloop.imgsz"] == "192"
    assert json.loads(v2.tags["cvloop.classes"]) == ["forklift", "pallet", "person"]
    assert v2.tags["cvloop.dataset.version"] == "dataset-v1"
    exports = json.loads(v2.tags["cvloop.exports"])
    assert exports["onnx"] == "ok" and exports["openvino_fp32"] == "ok"
    status = stack.cli("status", env=env).stdout
    # a candidate that passed starts its rollout at once (10 %); a rejected one does not
    prod = "PRODUCTION  v1 90%, v2 10%" if out["gate"] == "passed" else "PRODUCTION  v1 100%"
    assert prod in status and "v2" in status, status[:1500]
    assert f"outside cvloop: adopted from {team['checkpoint'].resolve()}" in status
