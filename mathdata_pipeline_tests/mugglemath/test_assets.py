import warnings

from mathdata_pipeline.mugglemath.assets import AugmentConfig
from mathdata_pipeline.mugglemath.prompts import REWRITE_TYPES, RewriteType


def test_default_rewrite_types_are_enum_members_and_serialize_without_warnings():
    config = AugmentConfig()
    assert config.rewrite_types == list(RewriteType)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dumped = config.model_dump(mode="json")
    assert dumped["rewrite_types"] == list(REWRITE_TYPES)
