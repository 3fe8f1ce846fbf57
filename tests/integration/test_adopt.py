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
    return {k: int(v) if k in ("frames", "holdout_frames") else Path(v) for k, v in out.items()}


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


def _team_args(team) -> list[str]:
    """What the team brings: their checkpoint, their labeled data and their own holdout."""
    return [str(team["checkpoint"]), "--data", str(team["coco_json"]), "--holdout",
            str(team["holdout_json"]), "--holdout-images", str(team["holdout_images"])]  # fmt: skip


@pytest.fixture(scope="module")
def adopted(stack, team, tmp_path_factory):
    """As a team starts: `cvloop init` makes the project (its classes and imgsz read from
    the checkout), then `cvloop adopt` with their checkpoint, data and holdout from inside
    it, on the session's services."""
    project = tmp_path_factory.mktemp("dock") / "dock"
    out = stack.cli("init", str(project), "--checkpoint", str(team["checkpoint"])).stdout
    assert "write     params.yaml" in out and "write     .git" in out
    env = {k: v for k, v in stack.env.items()
           if k not in ("CVLOOP_PARAMS", "CVLOOP_DATA_REPO", "CVLOOP_DVC_REMOTE")}  # fmt: skip
    env.update(CVLOOP_PROJECT_DIR=str(project), CVLOOP_DATA_REPO=str(project),
               CVLOOP_STORAGE_URI=str(project / "dock-bucket"),  # the team's bucket
               CVLOOP_DVC_REMOTE=str(project / "dvc-remote"))  # fmt: skip
    proc = stack.cli("adopt", *_team_args(team), env=env, timeout=900)
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
    assert data["holdout"]["frames"] == team["holdout_frames"] == 16  # the team's own
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


def test_dataset_and_holdout_v1_are_the_teams_frames_disjoint_and_versioned(team, adopted):
    from cvloop.adapters.datasets import read_manifest

    env, _ = adopted
    repo = Path(env["CVLOOP_DATA_REPO"])
    assert {"dataset-v1", "holdout-v1", "schema-v1"} <= set(_git(repo, "tag").split())
    schema = yaml.safe_load(_git(repo, "show", "dataset-v1:schema.yaml"))
    assert schema["versions"][0]["classes"] == ["forklift", "pallet", "person"]
    ds, ho = read_manifest(repo / "datasets"), read_manifest(repo / "holdout" / "data")
    assert len(ho) == 16 and len(ds) == 60  # the team's holdout, all their data
    assert not {e.sha256 for e in ds} & {e.sha256 for e in ho}
    assert {e.label_source for e in ds + ho} == {"imported"}
    assert all(e.source_key.endswith(".jpg") and "/images/dock-7-" in e.source_key for e in ds)
    assert {str(Path(e.source_key).parent) for e in ho} == {str(team["holdout_images"].resolve())}
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
    proc = stack.cli("adopt", *_team_args(team), env=env)
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
    """A Label Studio export (the third format): names spelled differently map onto the
    schema; a missing image, a box outside its image and a size that does not match the
    file are quarantined with their reasons."""
    from tests.external_detector import coco_to_label_studio

    env = _project(stack, tmp_path / "mapped", "mapped-detector")
    images = tmp_path / "images"
    shutil.copytree(team["images"], images)
    export = coco_to_label_studio(team["coco_json"], tmp_path / "ls-export.json")
    tasks = json.loads(export.read_text())
    for t in tasks:
        for r in t["annotations"][0]["result"]:
            if r["value"]["rectanglelabels"] == ["person"]:
                r["value"]["rectanglelabels"] = ["Person"]
    tasks[0]["data"]["image"] = "/data/upload/1/0badf00d-gone.jpg"
    for r in tasks[1]["annotations"][0]["result"]:
        r["original_width"] = 1280
    box = tasks[2]["annotations"][0]["result"][0]["value"]
    box.update(x=600 / 6.4, width=200 / 6.4)  # runs out of the 640 px frame
    export.write_text(json.dumps(tasks))
    stack.cli("adopt", str(team["checkpoint"]), "--data", str(export), "--images", str(images),
              "--class-map", "Person=person", "--holdout-frames", "12", env=env)  # fmt: skip
    (mv,) = _versions(stack, "mapped-detector")
    data = json.loads(mv.tags["cvloop.adopt.dataset"])["data"]
    assert data["format"] == "label-studio"
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
    registered); the same command again ends in the state a clean run reaches. The labels
    come as the Ultralytics data.yaml the team trained with (split folders)."""
    import os
    import signal
    import time

    from tests.conftest import CVLOOP

    env = _project(stack, tmp_path / "killed", "killed-detector")
    repo = Path(env["CVLOOP_DATA_REPO"])
    args = [str(team["checkpoint"]), "--data", str(team["yolo_yaml"]), "--holdout-frames", "12"]
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


def _team_params(env: dict, dest: Path) -> dict:
    """The team's settings on top of what `cvloop init` wrote: their bucket's key layout
    (capture time in the EXIF only), a model that logs every box above 0.001 (30 epochs on
    48 frames: a weak detector, so the confidence signal has detections to compare), and a
    1-epoch fine-tune with a short export benchmark (the test's time)."""
    from cvloop.config.params import load_params, with_overrides
    from tests.external_detector import LAYOUT

    over = {"frames": {"images": LAYOUT, "timestamp": "exif"}, "serve": {"conf": 0.001},
            "train": {"epochs": 1, "batch": 8}, "export": TINY["export"]}  # fmt: skip
    p = with_overrides(load_params(Path(env["CVLOOP_PROJECT_DIR"]) / "params.yaml"), over)
    dest.write_text(yaml.safe_dump(p.model_dump(by_alias=True, mode="json")))
    return dict(env, CVLOOP_PARAMS=str(dest))


def _serve_production(env: dict, frames: dict, tmp_path: Path) -> int:
    """`cvloop serve` answers every production frame (its store key, camera and capture
    time) and writes the inference log; a clean stop uploads every worker's journal."""
    import signal
    import time

    import httpx

    from tests.conftest import CVLOOP, free_port

    port = free_port()
    senv = dict(env, CVLOOP_SERVE_PORT=str(port), CVLOOP_SERVE_SPOOL=str(tmp_path / "spool"))
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([CVLOOP, "serve"], env=senv, cwd=REPO, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)  # fmt: skip
    url, sent = f"http://127.0.0.1:{port}", 0
    bucket = Path(env["CVLOOP_STORAGE_URI"])
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
            for key, f in frames.items():
                mime = "image/png" if key.endswith(".png") else "image/jpeg"
                r = c.post("/v1/detect", content=(bucket / key).read_bytes(),
                           headers={"content-type": mime},
                           params={"camera": f["camera"], "ts": f["ts"].isoformat(),
                                   "frame_key": key})  # fmt: skip
                assert r.status_code == 200, r.text
                assert r.json()["model_version"] == "1"
                sent += 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return sent


def _paused_retrain(api: str, proc: subprocess.Popen, window_end: str) -> dict:
    import time

    from tests.conftest import prefect_rest

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(
                f"cvloop retrain exited ({proc.returncode}):\n{out}\n{err[-4000:]}"
            )
        runs = prefect_rest(api).post("/flow_runs/filter", json={
            "flows": {"name": {"any_": ["retrain"]}},
            "flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}})  # fmt: skip
        mine = [r for r in runs if r["parameters"].get("window_end") == window_end]
        if mine:
            return mine[0]
        time.sleep(2)
    raise AssertionError("the retrain never paused for review")


def _review_from_truth(stack, project_id: int, frames: dict) -> int:
    """What the team's reviewers do in Label Studio: the right boxes for every task, on the
    image as it is (640 x 480), through the API the UI uses."""
    from cvloop.adapters.labelstudio import LabelStudioQueue
    from cvloop.core.frames import LabelBox
    from tests.external_detector import HEIGHT, WIDTH

    token = next(line.split("=", 1)[1].strip()
                 for line in (stack.home / "secrets.env").read_text().splitlines()
                 if line.startswith("LABEL_STUDIO_API_KEY="))  # fmt: skip
    q = LabelStudioQueue(stack.label_studio_url, token)
    assert q.labels(project_id) == ["forklift", "pallet", "person"]  # the team's classes
    n = 0
    for tid, data, done in q.tasks(project_id):
        assert done == 0
        boxes = [LabelBox(c, (x + w / 2) / WIDTH, (y + h / 2) / HEIGHT, w / WIDTH, h / HEIGHT)
                 for c, x, y, w, h in frames[data["key"]]["boxes"]]  # fmt: skip
        q.submit(tid, boxes, WIDTH, HEIGHT)
        n += 1
    return n


def test_the_adopted_detector_is_served_monitored_and_retrained_to_a_gated_candidate(
    stack, team, adopted, tmp_path
):
    """The team's day-to-day after adoption, on their own model (640x480 frames, imgsz 192,
    their classes) and their own bucket (their key layout, capture times in the EXIF, some
    PNGs): `cvloop serve` answers their cameras' frames and writes the inference log;
    `cvloop monitor` reads it (their classes and cameras, a darker camera flagged);
    `cvloop retrain` collects their frames, prefilters with the adopted model, queues them
    in Label Studio with their classes, and after their review versions dataset-v2 and
    fine-tunes v1 into a gated, registered v2 with its lineage; `cvloop status` answers for
    both."""
    import datetime as dt

    from mlflow import MlflowClient

    from cvloop.adapters.datasets import read_manifest
    from cvloop.adapters.inference_log import read_log
    from cvloop.adapters.storage import LocalStorage
    from tests.conftest import CVLOOP
    from tests.external_detector import write_production

    env, _ = adopted
    env = _team_params(env, tmp_path / "params.yaml")
    bucket = Path(env["CVLOOP_STORAGE_URI"])
    ref_day, cur_day = dt.date(2031, 2, 3), dt.date(2031, 2, 10)  # Mondays, a week apart
    ref = [ref_day + dt.timedelta(days=d) for d in range(3)]
    cur = [cur_day + dt.timedelta(days=d) for d in range(3)]
    frames = write_production(bucket, ["dock-north", "dock-south"], ref + cur, per_day=20,
                              seed=11, dark={("dock-south", d) for d in cur})  # fmt: skip
    sent = _serve_production(env, frames, tmp_path)
    rows = read_log(LocalStorage(bucket), ref_day, cur_day + dt.timedelta(days=3)).to_pylist()
    assert len(rows) == sent == len(frames) == 240
    assert {r["frame_key"] for r in rows} == set(frames)  # the bucket's own keys
    labels = {d["label"] for r in rows for d in r["detections"]}
    assert labels and labels <= {"forklift", "pallet", "person"}, labels
    # the weekly check on the log the server wrote, in the team's terms
    mon = stack.cli("monitor", "--current-end", str(cur_day + dt.timedelta(days=7)),
                    "--current-days", "7", "--reference-start", str(ref_day),
                    "--reference-days", "7", "--no-event", env=env, timeout=600)  # fmt: skip
    assert "triggers fired:" in mon.stdout, mon.stdout[-2000:] + mon.stderr[-2000:]
    week = (cur_day + dt.timedelta(days=6)).isocalendar()
    html = (Path(env.get("CVLOOP_HOME", stack.home)) / "reports" / "monitor"
            / f"{week.year}{week.week:02d}" / "drift-report.html")  # fmt: skip
    assert html.exists()
    client = MlflowClient(tracking_uri=stack.mlflow_uri)
    exp = client.get_experiment_by_name("dock-detector-monitor")  # the team's model's own
    (run,) = client.search_runs([exp.experiment_id],
                                f"attributes.run_name = 'monitor-{week.year}{week.week:02d}'")  # fmt: skip
    metrics = run.data.metrics
    cams = {k.split(".")[3] for k in metrics if k.startswith("drift.") and ".camera." in k}
    classes = {k.split(".")[3] for k in metrics if k.startswith("drift.") and ".class." in k}
    assert cams == {"dock-north", "dock-south"}, sorted(metrics)[:20]
    assert classes and classes <= {"forklift", "pallet", "person"}, classes
    assert run.data.tags["cvloop.champion"] == "1"  # the adopted champion was monitored

    # the retrain on the team's bucket, started by hand with no drift slice named: it takes
    # the slices of the latest weekly check (the dark camera), collects, prefilters, queues
    # in Label Studio and waits
    proc = subprocess.Popen([CVLOOP, "retrain", "--window-end", str(cur[-1]), "--days", "3"],
                            env={**env, "PREFECT_LOGGING_LEVEL": "WARNING"}, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        paused = _paused_retrain(stack.prefect_api, proc, str(cur[-1]))
        base = bucket / "runs" / "retrain" / paused["id"]
        info = json.loads((base / "review-queue.json").read_text())
        assert info["title"] == "dock-detector dataset-v2"  # the team's model's own project
        assert info["model_version"] == "dock-detector/1"
        assert json.loads((base / "quarantine.json").read_text()) == []  # EXIF times, PNGs
        reviewed = _review_from_truth(stack, info["project_id"], frames)
        assert reviewed == info["tasks"] > 0
        watch = stack.cli("review", "watch", env=env).stdout
        assert "resumed" in watch, watch
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-4000:]
    summary = json.loads(out[out.index("{") :])
    print("adopted retrain:", json.dumps({k: summary.get(k) for k in (
        "dataset_version", "validation", "added", "candidate_version", "gate", "gate_reasons")}))  # fmt: skip
    assert summary["dataset_version"] == "dataset-v2"
    v = summary["validation"]
    assert v["reviewed"] == reviewed and v["valid"] == reviewed and v["quarantined"] == 0
    repo = Path(env["CVLOOP_DATA_REPO"])
    ds, ho = read_manifest(repo / "datasets"), read_manifest(repo / "holdout" / "data")
    new = [e for e in ds if e.added_in == "dataset-v2"]
    added = [e for e in ho if e.added_in != "holdout-v1"]
    assert len(new) + len(added) == reviewed and new
    assert all(e.label_source == "reviewed" and e.source_key in frames for e in new + added)
    assert all(any(t.startswith("drift:") for t in e.slice_tags) for e in added)  # drift frames
    assert any("drift:camera dock-south" in e.slice_tags for e in added)
    assert not {e.sha256 for e in ds} & {e.sha256 for e in ho}
    # each reviewed frame's label file holds the team's boxes in the team's class ids, on
    # the image as shown (a sideways camera's EXIF orientation applied); PNGs stay PNG
    from cvloop.adapters.datasets import image_file, read_yolo_labels

    classes = ["forklift", "pallet", "person"]
    for root, entries in ((repo / "datasets", new), (repo / "holdout" / "data", added)):
        for e in entries:
            img = image_file(root, e.split, e.id)
            assert img.suffix == (".png" if e.source_key.endswith(".png") else ".jpg")
            got = sorted(
                (b.label, b.cx, b.cy, b.w, b.h)
                for b in read_yolo_labels(root / "labels" / e.split / f"{e.id}.txt", classes)
            )
            want = sorted((c, (x + w / 2) / 640, (y + h / 2) / 480, w / 640, h / 480)
                          for c, x, y, w, h in frames[e.source_key]["boxes"])  # fmt: skip
            assert len(got) == len(want), e
            for g, w in zip(got, want, strict=True):
                assert (
                    g[0] == w[0]
                    and max(abs(a - b) for a, b in zip(g[1:], w[1:], strict=True)) < 1e-3
                ), e
    kept = [frames[e.source_key] for e in new + added]
    assert any(f["sideways"] for f in kept)  # a rotated file, labeled upright
    assert {Path(e.source_key).suffix for e in new + added} == {".png", ".jpg"}
    # the model half: v1 fine-tuned on dataset-v2 at its own imgsz, gated, registered
    assert summary["candidate_version"] == "2" and summary["gate"] in ("passed", "rejected")
    v2 = next(v for v in _versions(stack, "dock-detector") if v.version == "2")
    assert v2.tags["cvloop.parent_version"] == "1" and v2.tags["cvloop.imgsz"] == "192"
    assert json.loads(v2.tags["cvloop.classes"]) == ["forklift", "pallet", "person"]
    assert v2.tags["cvloop.dataset.version"] == "dataset-v2"
    assert v2.tags["cvloop.registration"] == "complete"
    exports = json.loads(v2.tags["cvloop.exports"])
    assert exports["onnx"] == "ok" and exports["openvino_fp32"] == "ok"
    report = json.loads(Path(client.download_artifacts(v2.run_id, "gate/report.json",
                                                       str(tmp_path))).read_text())  # fmt: skip
    checks = {c["name"] for c in report["checks"]}
    assert {"holdout_map", "drift_slice:drift:camera dock-south", "clean_map",
            "calibration"} <= checks, checks  # fmt: skip
    # the manual retrain's drift gate came from the weekly check, and says so
    source = f"the latest monitor check, monitor-{week.year}{week.week:02d}"
    assert any(source in n and "camera dock-south" in n for n in report["notes"]), report
    retrain_run = client.get_run(client.get_run(v2.run_id).data.tags["mlflow.parentRunId"])
    assert retrain_run.data.tags["cvloop.drift.source"].startswith(source)
    status = stack.cli("status", env=env).stdout
    # a candidate that passed starts its rollout at once (10 %); a rejected one does not
    prod = "PRODUCTION  v1 90%, v2 10%" if summary["gate"] == "passed" else "PRODUCTION  v1 100%"
    assert prod in status and "v2" in status, status[:1500]
    assert f"outside cvloop: adopted from {team['checkpoint'].resolve()}" in status
    assert "dataset-v2" in status
    # the people were told (notifications: review ready; a rejection, if so) once each, with
    # the Label Studio project and the MLflow version as links
    told = {q.parent.name: json.loads(q.read_text()) for q in
            (bucket / "notifications").glob("*/*.json")}  # fmt: skip
    assert info["project_url"] in told["review_ready"]["text"]
    if summary["gate"] == "rejected":
        assert "#/models/dock-detector/versions/2" in told["candidate_rejected"]["text"]
    # the weekly review of the team's project: their data change, their versions, their check
    weekly = stack.cli("weekly", env=env).stdout
    data_part = weekly.split("## Did the data change, and why?")[1].split("##")[0]
    assert "dataset-v2" in data_part and "holdout-v1" in data_part, weekly
    versions_part = weekly.split("## Model versions registered")[1].split("##")[0]
    assert "v2" in versions_part and "dataset-v2" in versions_part, weekly
    checks_part = weekly.split("## Weekly drift checks")[1]
    assert f"monitor-{week.year}{week.week:02d}" in checks_part, weekly
