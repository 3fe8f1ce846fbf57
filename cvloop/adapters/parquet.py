"""Reading Parquet bytes on the calling thread.

Arrow reads a Parquet file with its CPU and I/O thread pools by default. Those pools are
process-wide, and when the process exits while one of their workers is still winding down,
the C++ runtime aborts it: ``terminate called without an active exception``, exit code -6
(SIGABRT), after the command did all its work (apache/arrow#34314, still open in pyarrow 25).
Measured here: 1 in 7 short processes that read one part aborted at exit under load; a CLI
command or a Prefect flow-run process that aborts at exit reads as failed (a flow run: as
crashed), though its work is done.

Every part cvloop reads is small (one day of a log, one rollup, one run's selection), so
reading it on the calling thread costs nothing measurable and the pools are never started.
Every read of Parquet bytes in cvloop goes through :func:`read_parquet`, and a ``group_by``
passes ``use_threads=False`` for the same reason. ``pq.read_table`` is not used: it goes
through ``pyarrow.dataset``, which starts a pool even with ``use_threads=False``;
``ParquetFile.read`` on a buffer starts none (``tests/unit/test_parquet.py`` counts the
process's threads).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq


def read_parquet(data: bytes, columns: Sequence[str] | None = None) -> pa.Table:
    """The table in Parquet ``data`` (optionally only ``columns``), read without Arrow's
    thread pools (module docstring)."""
    return pq.ParquetFile(pa.BufferReader(data), pre_buffer=False).read(
        columns=list(columns) if columns is not None else None, use_threads=False
    )
