"""Every column of the package's table schemas has a description, and table metadata carries it."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mathdata_pipeline.common.columns import COLUMN_DESCRIPTIONS
from mathdata_pipeline.common.metadata import table_metadata
from mathdata_pipeline.common.samples import SAMPLE_SCHEMA
from mathdata_pipeline.curation.solutions import SOLUTION_SCHEMA
from mathdata_pipeline.dart.sampling import DART_SAMPLE_SCHEMA
from mathdata_pipeline.decontamination.index import AUDIT_SCHEMA, INDEX_SCHEMA
from mathdata_pipeline.influence.examples import VALIDATION_SCHEMA
from mathdata_pipeline.mixtures.compose import MIXTURE_SCHEMA
from mathdata_pipeline.qads.candidates import CANDIDATE_SCHEMA
from mathdata_pipeline.qads.quality import QUALITY_SCHEMA
from mathdata_pipeline.qads.selection import DECISION_SCHEMA
from mathdata_pipeline.scalequest.rows import SYNTHESIZED_SCHEMA
from mathdata_pipeline.sources.general import GENERAL_SCHEMA

SCHEMAS = [
    SAMPLE_SCHEMA,
    DART_SAMPLE_SCHEMA,
    SOLUTION_SCHEMA,
    AUDIT_SCHEMA,
    INDEX_SCHEMA,
    VALIDATION_SCHEMA,
    MIXTURE_SCHEMA,
    CANDIDATE_SCHEMA,
    QUALITY_SCHEMA,
    DECISION_SCHEMA,
    SYNTHESIZED_SCHEMA,
    GENERAL_SCHEMA,
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: ",".join(s.names[:2]))
def test_every_schema_column_has_a_description(schema):
    missing = [name for name in schema.names if not COLUMN_DESCRIPTIONS.get(name)]
    assert not missing, f"add these columns to common/columns.py COLUMN_DESCRIPTIONS: {missing}"


def test_table_metadata_writes_the_descriptions_into_the_column_schema():
    table = pa.table({"problem_id": ["a"], "correct": [True], "unregistered_column": [1]})
    columns = table_metadata(table, "/tmp/x.parquet")["dagster/column_schema"].columns
    described = {c.name: c.description for c in columns}
    assert described["problem_id"] == COLUMN_DESCRIPTIONS["problem_id"] and described["correct"].startswith("whether")
    assert described["unregistered_column"] == ""
