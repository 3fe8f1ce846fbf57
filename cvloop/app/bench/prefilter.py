"""``cvloop bench prefilter``: the prefilter step against raw ONNX Runtime.

Cases:

* ``prefilter.frames_per_s``: frames/s of the prefilter step — read each frame from the
  store, decode, letterbox, batched inference, NMS, edge-case scoring, event sampling,
  fps cap and budget selection — over 2,000 fleet frames with the ``prefilter`` / ``select`` sections of params.yaml (baseline: the same frames read,
  decoded, letterboxed and run through the same ONNX model in the same batches, and
  nothing else; goal ratio >= 0.90).
* ``prefilter.peak_rss_mb_20k``: peak RSS of a process that prefilters 20,000 frames
  (baseline: the same for 2,000 frames; streaming keeps the ratio near 1).

The model is the shipped YOLO11 'pico' graph, untrained (same cost as a trained one).
``--quick`` divides the sizes by 4.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cvloop.app.bench import Case, timed
from cvloop.app.bench.common import CLASSES, fleet_frames, untrained_onnx

IMGSZ = 256


def _pipeline(store_dir: str, onnx: str, refs: list, counts: dict | None = None) -> int:
    """The prefilter step as the retrain task runs it (store -> selection), with the
    ``prefilter`` and ``select`` sections of params.yaml (``counts``: per camera, what the
    event-driven sampling kept)."""
    from cvloop.adapters.detector import OnnxDetector
    from cvloop.adapters.frame_keys import read_frame
    from cvloop.adapters.storage import LocalStorage
    from cvloop.config.params import load_params
    from cvloop.stages.prefilter import run_prefilter

    p = load_params()
    store = LocalStorage(store_dir)
    det = OnnxDetector(onnx, list(CLASSES), IMGSZ)
    frames = ((k, cam, ts, read_frame(store, k)) for k, cam, ts in refs)
    _events, chosen = run_prefilter(frames, det, p.prefilter, p.select, {"cam-02"}, set(),
                                    counts=counts)  # fmt: skip
    return len(chosen)


def _raw(store_dir: str, onnx: str, refs: list) -> int:
    """Read, decode, letterbox, run the model in batches: the floor any prefilter pays."""
    from cvloop.adapters.detector import OnnxDetector, decode_jpeg
    from cvloop.adapters.storage import LocalStorage
    from cvloop.config.params import load_params

    batch_size = load_params().prefilter.batch_size
    store = LocalStorage(store_dir)
    det = OnnxDetector(onnx, list(CLASSES), IMGSZ)
    n = 0
    for i in range(0, len(refs), batch_size):
        images = [decode_jpeg(store.get_bytes(k)) for k, _, _ in refs[i : i + batch_size]]
        batch, _ = det.preprocess(images)
        det.forward(batch)
        n += len(images)
    return n


def _child(store_dir: str, onnx: str, refs_path: str, n: int) -> None:
    """Run the prefilter over ``n`` frames (cycling the refs) and print the peak RSS."""
    from cvloop.app.bench.common import peak_rss_mb

    refs = json.loads(Path(refs_path).read_text())
    cycled = [refs[i % len(refs)] for i in range(n)]
    # distinct timestamps per lap, so the fps cap sees n frames, not the same ones again
    cycled = [(k, c, ts + (i // len(refs)) * 86_400_000) for i, (k, c, ts) in enumerate(cycled)]
    _pipeline(store_dir, onnx, cycled)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def _rss_of(store_dir: Path, onnx: Path, refs_path: Path, n: int) -> float:
    code = (
        "import sys; from cvloop.app.bench.prefilter import _child; "
        f"_child({str(store_dir)!r}, {str(onnx)!r}, {str(refs_path)!r}, {n})"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_rss_mb"])


def _kept_shares(store_dir: str, onnx: str, refs: list) -> Iterator[Case]:
    """What the event-driven sampling kept of the frames that are neither edge cases nor of
    a drift slice (empty ones, ordinary ones), against what params.yaml's shares promise for
    the same frames (``empty_share`` of the empty ones + ``ordinary_share`` of the others)."""
    from cvloop.config.params import load_params
    from cvloop.core.selection import COUNTS

    pf = load_params().prefilter
    counts: dict = {}
    _pipeline(store_dir, onnx, refs, counts)
    t = {k: sum(c[k] for c in counts.values()) for k in COUNTS}
    print(f"prefilter: {t['in']} frames in -> {t['edge']} edge cases + {t['drift']} drift-slice "
          f"frames + {t['ordinary_kept']} of {t['in_ordinary']} ordinary + {t['empty_kept']} of "
          f"{t['in_empty']} empty kept, {t['dropped']} dropped -> {t['survivors']} survivors "
          "at the fps cap", file=sys.stderr)  # fmt: skip
    pool = t["in_empty"] + t["in_ordinary"]
    if pool:
        promised = (pf.empty_share * t["in_empty"] + pf.ordinary_share * t["in_ordinary"]) / pool
        yield Case(
            "prefilter.kept_share_of_non_edge_frames",
            round((t["empty_kept"] + t["ordinary_kept"]) / pool, 4),
            "share",
            f"the configured shares for the same {pool} frames (empty {pf.empty_share:g}, "
            f"ordinary {pf.ordinary_share:g})",
            round(promised, 4),
        )


def run(quick: bool = False) -> Iterator[Case]:
    n_small = 500 if quick else 2000
    n_large = n_small * 10
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        onnx = untrained_onnx(tmp, IMGSZ)
        store_dir = tmp / "store"
        refs = fleet_frames(store_dir, n_small, IMGSZ)[:n_small]
        _raw(str(store_dir), str(onnx), refs[:64])  # warm-up: file cache, ORT session
        t_ours, _ = timed(lambda: _pipeline(str(store_dir), str(onnx), refs), repeat=2)
        t_raw, _ = timed(lambda: _raw(str(store_dir), str(onnx), refs), repeat=2)
        yield Case(
            "prefilter.frames_per_s",
            round(len(refs) / t_ours, 1),
            "frames/s",
            f"raw batched ONNX Runtime (read+decode+letterbox+run), {len(refs)} frames",
            round(len(refs) / t_raw, 1),
        )
        yield from _kept_shares(str(store_dir), str(onnx), refs)
        refs_path = tmp / "refs.json"
        refs_path.write_text(json.dumps(refs))
        small = _rss_of(store_dir, onnx, refs_path, n_small)
        large = _rss_of(store_dir, onnx, refs_path, n_large)
        yield Case(
            f"prefilter.peak_rss_mb_{n_large // 1000}k",
            round(large, 1),
            "MB",
            f"peak RSS prefiltering {n_small} frames",
            round(small, 1),
        )
