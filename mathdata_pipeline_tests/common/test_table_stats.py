"""Tables described for people: numbers as people read them in previews and statistics."""

from __future__ import annotations

import math

import pyarrow as pa

from mathdata_pipeline.common.table_stats import display_number, markdown_column_stats, markdown_preview


def test_numbers_are_shown_rounded_and_infinity_is_named():
    assert display_number(float(pa.scalar(0.7, pa.float32()).as_py())) == "0.7"  # not 0.699999988079071
    assert display_number(0.26228976249694824) == "0.2623"
    assert display_number(math.inf) == "∞" and display_number(-math.inf) == "-∞" and display_number(math.nan) == "NaN"
    assert display_number(12) == "12" and display_number(True) == "True" and display_number(3.0e7) == "30000000"


def test_preview_and_column_stats_show_display_numbers():
    table = pa.table(
        {
            "temperature": pa.array([0.7, 0.7], pa.float32()),
            "min_distance": pa.array([math.inf, 0.123456], pa.float32()),
        }
    )
    preview = markdown_preview(table)
    assert "| 0.7 | ∞ |" in preview and "0.6999" not in preview and "inf" not in preview
    stats = markdown_column_stats(table)
    assert "0.699999" not in stats and "∞" in stats
