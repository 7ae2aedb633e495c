"""The code location loads, and its asset graph is what we expect (snapshot)."""

from __future__ import annotations

import dagster as dg

from mathdata_pipeline.definitions import defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def _describe(partitions: dg.PartitionsDefinition | None):
    if partitions is None:
        return None
    if isinstance(partitions, dg.DynamicPartitionsDefinition):
        return f"dynamic:{partitions.name}"
    return partitions.get_partition_keys()


def test_asset_graph_snapshot(snapshot):
    graph = {}
    for spec in sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string()):
        graph[spec.key.to_user_string()] = {
            "deps": sorted(d.asset_key.to_user_string() for d in spec.deps),
            "group": spec.group_name,
            "kinds": sorted(spec.kinds),
            "partitions": _describe(spec.partitions_def),
        }
    checks = sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in defs.resolve_asset_graph().asset_check_keys)
    assert {"assets": graph, "checks": checks} == snapshot
