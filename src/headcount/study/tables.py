"""The study's tidy tables, written as CSV and Parquet (one row per measured point)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from headcount.io import write_atomic


def write_tables(directory: Path, tables: dict[str, list[dict]]) -> list[Path]:
    """`<name>.csv` and `<name>.parquet` per non-empty table, each written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in sorted(tables.items()):
        if not rows:
            continue
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        written.append(write_atomic(directory / f"{name}.csv", buffer.getvalue()))
        table = pa.Table.from_pylist([{column: row.get(column) for column in columns}
                                      for row in rows])
        staging = directory / f".{name}.parquet.tmp"
        try:
            pq.write_table(table, staging)
            staging.replace(directory / f"{name}.parquet")
        finally:
            staging.unlink(missing_ok=True)  # stopped midway: no temporary file is left
        written.append(directory / f"{name}.parquet")
    return written
