"""Dropping rows that overlap a benchmark (counted), for every stage that builds training data."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.decontamination.index import ContaminationIndex


def drop_benchmark_overlap(
    table: pa.Table, index_table: pa.Table, id_column: str = "problem_id"
) -> tuple[pa.Table, int]:
    """`table` without the rows whose `question` overlaps a benchmark item in the contamination
    index (`id_column` names each row); returns (kept rows, number dropped)."""
    audit = ContaminationIndex.from_table(index_table).find_matches(
        zip(table.column(id_column).to_pylist(), table.column("question").to_pylist())
    )
    overlapping = pa.array(sorted(set(audit.column("row_id").to_pylist())), pa.string())
    return table.filter(pc.invert(pc.is_in(table.column(id_column), value_set=overlapping))), len(overlapping)
