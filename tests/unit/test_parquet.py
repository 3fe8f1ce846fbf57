"""Reading the log never starts Arrow's thread pools, so no cvloop process aborts at exit.

pyarrow's pools abort a process that exits while one of their workers winds down
(``terminate called without an active exception``, SIGABRT; apache/arrow#34314): CI lost a
run to it (``cvloop fleet log`` exited -6 after printing its answer). The threads of a fresh
process are counted after importing, then after the real reads: no thread may be added.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import datetime as dt, io, os, sys
    import pyarrow as pa, pyarrow.parquet as pq
    from cvloop.adapters.inference_log import FrameRecord, Detection, read_log, write_log
    from cvloop.adapters.label_store import LabeledFrame, read_labels, write_labels
    from cvloop.core.frames import LabelBox
    from cvloop.adapters.parquet import read_parquet
    from cvloop.adapters.rollups import build_rollup, load_rollups
    from cvloop.adapters.storage import LocalStorage
    from cvloop.stages.reports import volume_by_day

    def threads():
        return len(os.listdir("/proc/self/task"))

    store = LocalStorage(sys.argv[1])
    day = dt.date(2026, 10, 5)
    recs = [
        FrameRecord(
            dt.datetime(2026, 10, 5 + d, 1, i, tzinfo=dt.UTC), f"cam-0{i % 3}",
            f"frames/{d}/{i}.jpg", "1", 2.5,
            [Detection("a", 0.9, 0.5, 0.5, 0.1, 0.1)],
        )
        for d in range(3) for i in range(40)
    ]
    write_log(store, recs)
    write_labels(store, [LabeledFrame(recs[0].ts, "cam-00", recs[0].frame_key,
                                      [LabelBox("a", 0.5, 0.5, 0.1, 0.1)])])
    before = threads()
    table = read_log(store, day, day + dt.timedelta(days=3))
    assert table.num_rows == 120, table.num_rows
    table.group_by(["model_version", "camera"], use_threads=False).aggregate(
        [("frame_key", "count")]
    )
    build_rollup(store, day)
    assert load_rollups(store, day, day + dt.timedelta(days=1)).num_rows
    volume_by_day(store, [day + dt.timedelta(days=d) for d in range(3)])
    assert len(read_labels(store, dt.datetime(2026, 10, 5, tzinfo=dt.UTC),
                           dt.datetime(2026, 10, 8, tzinfo=dt.UTC))) == 1
    key = store.keys("inference-log/date=2026-10-05/")[0]
    read_parquet(store.get_bytes(key), columns=["ts", "camera"])
    ours = threads() - before
    print(ours, flush=True)
    if sys.argv[2] == "control":
        pq.read_table(io.BytesIO(store.get_bytes(key)))
        print(threads() - before - ours, flush=True)
        os._exit(0)  # a process with a pool may abort at exit: the bug itself
    """
)


def _run(store: Path, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(store), mode],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_the_reads_of_cvloop_add_no_thread_where_pq_read_table_does(tmp_path):
    proc = _run(tmp_path / "ours", "ours")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0"]
    control = _run(tmp_path / "control", "control")
    assert control.returncode == 0, control.stderr
    ours, read_table = (int(n) for n in control.stdout.split())
    assert ours == 0
    # the counting sees a pool when one starts: pq.read_table (through pyarrow.dataset)
    # starts one even for one small part, which is why cvloop does not call it
    assert read_table >= 1


def test_no_module_reads_parquet_or_groups_with_arrow_threads():
    offenders = []
    for folder in ("cvloop", "flows", "tasks", "registry"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "parquet.py" and path.parent.name == "adapters":
                continue
            text = path.read_text()
            for m in re.finditer(r"pq\.read_table\(|\.to_pandas\(|\.group_by\(([^)]*)\)", text):
                if m.group(0).startswith(".group_by") and "use_threads=False" in m.group(1):
                    continue
                offenders.append(f"{path.relative_to(REPO)}: {m.group(0)}")
    assert not offenders, (
        "read Parquet with cvloop.adapters.parquet.read_parquet and pass use_threads=False "
        f"to group_by (apache/arrow#34314): {offenders}"
    )
