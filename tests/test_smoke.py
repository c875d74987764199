from authz_migration import flags


def test_flag_defaults_to_legacy_without_any_override(db):
    assert flags.is_authz_enabled("course-v1:OrgA+C1+2024") is False
