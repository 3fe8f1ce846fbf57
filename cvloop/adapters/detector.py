"""The serving path of a YOLO model exported to ONNX: ONNX Runtime, or OpenVINO on Intel CPUs.

Pre-processing is Ultralytics' letterbox (same resize, same padding value, RGB, /255), so
the ONNX model sees what the ``.pt`` saw in validation; post-processing decodes the YOLO
head (``[B, 4 + nc, anchors]``: ``cx, cy, w, h`` in input pixels, then class scores),
filters by confidence and runs class-aware NMS. Boxes come back normalized to the original
frame.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvloop.core.errors import CvloopError


@dataclass
class Detections:
    """Detections of one frame: ``xyxy`` normalized to [0, 1], scores, class ids."""

    xyxy: np.ndarray  # (n, 4) float32
    scores: np.ndarray  # (n,) float32
    classes: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.scores)

    def cxcywh(self) -> np.ndarray:
        x0, y0, x1, y1 = self.xyxy.T
        return np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=1)


@dataclass(frozen=True)
class LetterboxMeta:
    ratio: float
    pad_x: float
    pad_y: float
    width: int
    height: int


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, LetterboxMeta]:
    """Ultralytics' letterbox: keep aspect, pad with 114 to ``size x size`` (centered)."""
    import cv2

    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    if (w, h) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(
            image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114)
        )
    return image, LetterboxMeta(r, left, top, w, h)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS; returns kept indices in descending score order."""
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = boxes.T
    areas = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx0 = np.maximum(x0[i], x0[rest])
        yy0 = np.maximum(y0[i], y0[rest])
        xx1 = np.minimum(x1[i], x1[rest])
        yy1 = np.minimum(y1[i], y1[rest])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        ious = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[ious <= iou]
    return np.asarray(keep, dtype=np.int64)


def decode(
    raw: np.ndarray, metas: list[LetterboxMeta], conf: float, iou: float, max_det: int = 300
) -> list[Detections]:
    """Decode a YOLO head output ``[B, 4 + nc, A]`` into per-frame detections."""
    out = []
    max_wh = 7680.0
    for b, meta in enumerate(metas):
        pred = raw[b].T  # (A, 4 + nc)
        cls_scores = pred[:, 4:]
        cls = cls_scores.argmax(axis=1)
        score = cls_scores[np.arange(len(cls)), cls]
        sel = score > conf
        if not sel.any():
            out.append(
                Detections(
                    np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
                )
            )
            continue
        p, score, cls = pred[sel], score[sel], cls[sel]
        cx, cy, w, h = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        keep = nms(boxes + (cls[:, None] * max_wh), score, iou)[:max_det]
        boxes, score, cls = boxes[keep], score[keep], cls[keep]
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - meta.pad_x) / meta.ratio / meta.width
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - meta.pad_y) / meta.ratio / meta.height
        out.append(
            Detections(
                np.clip(boxes, 0, 1).astype(np.float32),
                score.astype(np.float32),
                cls.astype(np.int64),
            )
        )
    return out


class _Detector:
    """Letterbox, one forward pass per batch, decode + NMS: what every runtime shares.
    A runtime sets ``class_names``, ``imgsz``, ``path``, ``dynamic_batch`` and ``runtime`` and
    implements :meth:`_run` (a float32 NCHW batch in, the YOLO head's output out)."""

    runtime = "?"
    class_names: list[str]
    imgsz: int
    path: Path
    dynamic_batch: bool

    def _check_classes(self, out_channels) -> None:
        nc = out_channels - 4 if isinstance(out_channels, int) and out_channels > 4 else None
        if nc is not None and nc != len(self.class_names):
            raise CvloopError(
                f"{self.path.name} predicts {nc} classes but {len(self.class_names)} names were "
                f"given ({self.class_names})",
                fix="use the class list the model was trained with",
            )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def preprocess(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[LetterboxMeta]]:
        batch = np.empty((len(images), 3, self.imgsz, self.imgsz), dtype=np.float32)
        metas = []
        for i, img in enumerate(images):
            boxed, meta = letterbox(img, self.imgsz)
            batch[i] = boxed.transpose(2, 0, 1) / np.float32(255.0)
            metas.append(meta)
        return batch, metas

    def forward(self, batch: np.ndarray) -> np.ndarray:
        if self.dynamic_batch or batch.shape[0] == 1:
            return self._run(batch)
        return np.concatenate([self._run(batch[i : i + 1]) for i in range(batch.shape[0])])

    def predict(
        self, images: list[np.ndarray], conf: float = 0.25, iou: float = 0.7, max_det: int = 300
    ) -> list[Detections]:
        """Detections for RGB uint8 frames (any size)."""
        batch, metas = self.preprocess(images)
        return decode(self.forward(batch), metas, conf, iou, max_det)

    def predict_timed(
        self, image: np.ndarray, conf: float = 0.25, iou: float = 0.7
    ) -> tuple[Detections, float]:
        """One frame, end to end, with its latency in milliseconds."""
        t = time.perf_counter()
        det = self.predict([image], conf, iou)[0]
        return det, (time.perf_counter() - t) * 1000.0


class OnnxDetector(_Detector):
    """A YOLO detector served by ONNX Runtime.

    Args:
        path: the ``.onnx`` file (exported with a dynamic batch axis for batching).
        class_names: names by class id.
        imgsz: input size the model was exported at.
        threads: intra-op threads (default: all cores).
        spinning: let idle intra-op threads spin-wait (ORT's default: lowest latency for a
            process that serves one model). Turn it off where several sessions share the
            cores: a neighbour's spinning threads slow the next session down (measured on
            2 cores, a model getting 10 % of the calls after the other's: p50 13.1 ms
            instead of 5.8 ms).
        providers: ORT execution providers (default: CUDA if available, else CPU).
        model_bytes: the model's bytes, already read and verified by the caller (``path``
            then only names it).
    """

    def __init__(
        self,
        path: str | Path,
        class_names: list[str],
        imgsz: int,
        threads: int | None = None,
        providers: list[str] | None = None,
        spinning: bool = True,
        model_bytes: bytes | None = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if model_bytes is None and not path.exists():
            raise CvloopError(
                f"ONNX model not found: {path}",
                fix="export it (`cvloop bootstrap` / the retrain flow) or fetch it "
                "from the registry",
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.log_severity_level = 3
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        wanted = providers or [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
        ]
        # from bytes when the caller has verified them (no second read of a file that could
        # have changed in between)
        source = model_bytes if model_bytes is not None else str(path)
        self.session = ort.InferenceSession(source, sess_options=opts, providers=wanted)
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        self.dynamic_batch = not isinstance(shape[0], int)
        self.class_names = list(class_names)
        self.imgsz = imgsz
        self.path = path
        self._check_classes(self.session.get_outputs()[0].shape[1])

    runtime = "onnxruntime"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


class OpenVinoDetector(_Detector):
    """A YOLO detector served by OpenVINO on the CPU, compiled from the same ONNX graph.

    OpenVINO reads the ONNX itself (no second artifact to verify: the bytes are the ones
    the registry's sha256 names); a graph with dynamic spatial axes is fixed at ``imgsz``
    with the batch axis left dynamic, and the precision is pinned to FP32 (OpenVINO would
    pick bf16 on CPUs with AMX). One infer request per calling thread: a compiled model
    is shared, a request is not.

    Args: as :class:`OnnxDetector`; ``threads`` is OpenVINO's ``INFERENCE_NUM_THREADS``.
    """

    runtime = "openvino"

    def __init__(
        self,
        path: str | Path,
        class_names: list[str],
        imgsz: int,
        threads: int | None = None,
        model_bytes: bytes | None = None,
        hint: str = "LATENCY",
    ) -> None:
        import threading

        try:
            import openvino as ov
        except ImportError:
            raise CvloopError(
                "the openvino runtime is not installed in this environment",
                fix="install openvino (it is in requirements/main.lock), or use onnxruntime",
            ) from None
        path = Path(path)
        if model_bytes is None and not path.exists():
            raise CvloopError(f"ONNX model not found: {path}",
                              fix="fetch it from the registry")  # fmt: skip
        core = ov.Core()
        model = core.read_model(model_bytes if model_bytes is not None else str(path))
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.get_length() == 4 and (shape[2].is_dynamic or shape[3].is_dynamic):
            model.reshape({model.inputs[0]: ov.PartialShape([-1, 3, imgsz, imgsz])})
        self.dynamic_batch = model.inputs[0].get_partial_shape()[0].is_dynamic
        self.compiled = core.compile_model(model, "CPU", {
            "PERFORMANCE_HINT": hint,
            "INFERENCE_NUM_THREADS": int(threads or (os.cpu_count() or 1)),
            "INFERENCE_PRECISION_HINT": "f32",
        })  # fmt: skip
        self.class_names = list(class_names)
        self.imgsz = imgsz
        self.path = path
        out = model.outputs[0].get_partial_shape()
        self._check_classes(out[1].get_length() if out[1].is_static else None)
        self._local = threading.local()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req.infer({0: batch})[0].copy()


def make_detector(
    runtime: str,
    path: str | Path,
    class_names: list[str],
    imgsz: int,
    *,
    threads: int | None = None,
    model_bytes: bytes | None = None,
    spinning: bool = True,
) -> _Detector:
    """The detector of ``runtime`` (``onnxruntime`` or ``openvino``) for an ONNX model."""
    if runtime == "openvino":
        return OpenVinoDetector(path, class_names, imgsz, threads=threads,
                                model_bytes=model_bytes)  # fmt: skip
    if runtime == "onnxruntime":
        return OnnxDetector(path, class_names, imgsz, threads=threads, spinning=spinning,
                            model_bytes=model_bytes)  # fmt: skip
    raise CvloopError(f"no detector for runtime {runtime!r}",
                      fix="use onnxruntime or openvino")  # fmt: skip


#: the most pixels cvloop decodes in one frame (50 MP: above 8K UHD's 33 MP); a frame that
#: declares more is refused from its header, before a pixel is allocated
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "CVLOOP_MAX_PIXELS"


def max_pixels() -> int:
    raw = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        return int(raw) if raw else DEFAULT_MAX_PIXELS
    except ValueError:
        raise CvloopError(f"{MAX_PIXELS_ENV}={raw!r} is not a whole number",
                          fix=f"set {MAX_PIXELS_ENV} to a pixel count, e.g. 50000000") from None  # fmt: skip


def check_pixels(data: bytes, limit: int | None = None) -> None:
    """Refuse an image whose header declares more than ``limit`` pixels (a decompression
    bomb: a small PNG that declares 30000 x 30000 needs 2.7 GB decoded). Only the header
    is read; an image Pillow cannot parse is left to the decoder to refuse."""
    import io
    import warnings

    from PIL import Image

    limit = limit or max_pixels()
    fix = (
        f"resize at the camera, or raise the limit ({MAX_PIXELS_ENV}, default {DEFAULT_MAX_PIXELS})"
    )
    size = _declared_size(data)  # JPEG / PNG: a few bytes of the header, microseconds
    if size is None:  # another format: Pillow reads its header (lazily, no pixels)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:
                    size = im.size
        except Image.DecompressionBombError as exc:
            raise CvloopError(f"image too large to decode: {exc}", fix=fix) from None
        except Exception:
            return
    w, h = size
    if w * h > limit:
        raise CvloopError(f"image declares {w} x {h} pixels ({w * h / 1e6:.0f} MP), above the "
                          f"{limit / 1e6:g} MP cvloop decodes", fix=fix)  # fmt: skip


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG's IHDR or a JPEG's start-of-frame declares; None for another
    format or a header this does not follow (Pillow then reads it)."""
    import struct

    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return None
        length = (data[i + 2] << 8) | data[i + 3]
        if marker in _SOF and i + 9 <= n:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None


def decode_jpeg(data: bytes) -> np.ndarray:
    """RGB uint8 pixels of an encoded image; raises :class:`CvloopError` if unreadable or
    larger than :func:`max_pixels`."""
    import cv2

    check_pixels(data)
    arr = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    if img is None:
        raise CvloopError("image could not be decoded (corrupt, truncated or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
