"""Bad input, table-driven, on every database: each row of each table is one kind of bad (or
borderline) value and its documented outcome (docs/reliability.rst, "Bad input"):

- **moved**: the row moves, byte for byte in the openedx-authz format, and a round trip
  gives back exactly the row it started from;
- **left in place and reported**: the row stays where it is, the run is ``partial_success``
  and names the row under a reason (``malformed_course_key``, ``invalid_org``,
  ``value_too_long``, ``no_scope``, ``user_missing``, ``unknown_user``,
  ``malformed_casbin_row``, ``conflicting_row``);
- **not migrated**: a role outside the role map stays and is counted by role, not a problem;
- **ignored**: a Casbin row outside the course namespace is never read;
- **refused**: the API raises ``InvalidCourseKey`` / ``InvalidOrg`` naming the value, the
  command exits 2 naming it; an override save with such a key is saved but moves nothing.

Every row also checks that nothing is lost: the other rows of the table still move, and the
bad row is still there, unchanged, afterwards.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, models
from django.test import override_settings

from authz_migration import api, conf, flags
from authz_migration.automatic import RESULT_ATTRIBUTE
from authz_migration.conf import legacy_role_model
from authz_migration.models import MigrationRun
from authz_migration.orchestrator import FORWARD, ROLLBACK
from authz_migration.roles import InvalidCourseKey, InvalidOrg
from authz_migration.stores import casbin_rule_model
from tests.helpers import legacy_rows_by_username as legacy_rows
from tests.helpers import lock_rows_in_test_transaction

COMPLETED = MigrationRun.Status.COMPLETED
PARTIAL = MigrationRun.Status.PARTIAL_SUCCESS

GOOD_COURSE = "course-v1:OrgG+Good+2024"  # a well-formed role in every table: it must move
MOVED, NOT_MIGRATED, IGNORED = "moved", "not_migrated", "ignored"


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _lock_rows_in_the_test_transaction(request, monkeypatch):
    """Lock rows in the test's own transaction (see the helper); tests that commit
    (``transaction=True``) keep the real path."""
    marker = request.node.get_closest_marker("django_db")
    if "transactional_db" in request.fixturenames or (marker and marker.kwargs.get("transaction")):
        return
    lock_rows_in_test_transaction(monkeypatch)


def casbin_rows() -> set[tuple[str, ...]]:
    return set(casbin_rule_model().objects.values_list("ptype", "v0", "v1", "v2", "v3", "v4", "v5"))


def g(user: str, casbin_role: str, key: str) -> tuple[str, ...]:
    """The Casbin row of a course role (or, for ``ORG+*``, an org-wide role)."""
    return ("g", f"user^{user}", f"role^{casbin_role}", f"course-v1^{key}", "", "", "")


def set_global_flag(on: bool) -> None:
    from waffle import get_waffle_flag_model

    get_waffle_flag_model().objects.update_or_create(
        name=flags.flag_name(), defaults={"everyone": on}
    )


def sync_all() -> dict[str, list]:
    """``sync --all`` through the API: outcomes by direction."""
    outcomes = list(api.sync_instance())
    return {
        FORWARD: [o for o in outcomes if o.move.direction == FORWARD],
        ROLLBACK: [o for o in outcomes if o.move.direction == ROLLBACK],
    }


def only(outcomes: list):
    [outcome] = outcomes
    return outcome


def runs() -> list[MigrationRun]:
    return list(MigrationRun.objects.order_by("id"))


# --- 1. legacy rows -------------------------------------------------------------------------


def long_key(length: int) -> str:
    """A well-formed course key of exactly ``length`` characters."""
    head, tail = "course-v1:OrgL+", "+R"
    return head + "C" * (length - len(head) - len(tail)) + tail


@dataclass(frozen=True)
class LegacyCase:
    id: str
    org: str
    course_id: str
    role: str
    outcome: str  # MOVED, NOT_MIGRATED, or the reason it could not move
    casbin_scope: str = ""  # the v2 written for MOVED (without "course-v1^")


LEGACY_CASES = [
    # Course keys that are not course-v1:ORG+COURSE+RUN.
    LegacyCase("two-parts", "OrgA", "course-v1:OrgA+C1", "staff", "malformed_course_key"),
    LegacyCase("four-parts", "OrgA", "course-v1:OrgA+C1+R+X", "staff", "malformed_course_key"),
    LegacyCase("slash-key", "OrgA", "OrgA/C1/R", "staff", "malformed_course_key"),
    LegacyCase("space", "OrgA", "course-v1:OrgA+C 1+R", "staff", "malformed_course_key"),
    LegacyCase("trailing-space", "OrgA", "course-v1:OrgA+C1+R ", "staff", "malformed_course_key"),
    LegacyCase("newline", "OrgA", "course-v1:OrgA+C1+R\n", "staff", "malformed_course_key"),
    LegacyCase("percent-org", "Org%", "course-v1:Org%+C1+R", "staff", "malformed_course_key"),
    LegacyCase("quote-org", "Org'A", "course-v1:Org'A+C1+R", "staff", "malformed_course_key"),
    LegacyCase("caret-org", "Org^A", "course-v1:Org^A+C1+R", "staff", "malformed_course_key"),
    LegacyCase("emoji-org", "Org😀", "course-v1:Org😀+C1+R", "staff", "malformed_course_key"),
    LegacyCase("library-key", "OrgA", "library-v1:OrgA+L1", "staff", NOT_MIGRATED),
    LegacyCase("malformed-unmapped", "OrgA", "course-v1:OrgA+C1", "finance_admin", NOT_MIGRATED),
    # Org-wide roles (blank course) whose org cannot be part of a course key.
    LegacyCase("org-percent", "Org%", "", "staff", "invalid_org"),
    LegacyCase("org-underscore-wildcard", "Org_", "", "staff", MOVED, "course-v1:Org_+*"),
    LegacyCase("org-plus", "Org+A", "", "staff", "invalid_org"),
    LegacyCase("org-caret", "Org^A", "", "staff", "invalid_org"),
    LegacyCase("org-space", "Org A", "", "staff", "invalid_org"),
    LegacyCase(
        "org-sql-quote",
        "Org'; DROP TABLE casbin_rule; --",
        "",
        "staff",
        "invalid_org",
    ),
    LegacyCase("no-scope", "", "", "staff", "no_scope"),
    LegacyCase("no-scope-unmapped", "", "", "course_creator_group", NOT_MIGRATED),
    # Role names that differ from the map's only in case or spaces are other roles.
    LegacyCase("role-case", "OrgA", "course-v1:OrgA+C1+R", "Staff", NOT_MIGRATED),
    LegacyCase("role-leading-space", "OrgA", "course-v1:OrgA+C1+R", " staff", NOT_MIGRATED),
    LegacyCase("role-trailing-space", "OrgA", "course-v1:OrgA+C1+R", "staff ", NOT_MIGRATED),
    # Column lengths: casbin_rule.v2 holds 255 characters, "course-v1^" takes 10 of them.
    LegacyCase("key-245-fits", "OrgL", long_key(245), "staff", MOVED, long_key(245)),
    LegacyCase("key-246", "OrgL", long_key(246), "staff", "value_too_long"),
    LegacyCase("key-255", "OrgL", long_key(255), "staff", "value_too_long"),
    LegacyCase("org-64", "O" * 64, "", "staff", MOVED, f"course-v1:{'O' * 64}+*"),
    # Unusual but valid: edx-opaque-keys allows Unicode letters, "_", ".", "-", "~", ":".
    LegacyCase(
        "unicode-org",
        "Orgé",
        "course-v1:Orgé+Cours+2024",
        "staff",
        MOVED,
        "course-v1:Orgé+Cours+2024",
    ),
    LegacyCase(
        "cjk-org",
        "組織",
        "course-v1:組織+課程+2024",
        "instructor",
        MOVED,
        "course-v1:組織+課程+2024",
    ),
    LegacyCase("org-wide-unicode", "Orgé", "", "staff", MOVED, "course-v1:Orgé+*"),
    LegacyCase(
        "punctuation",
        "O.r-g~A",
        "course-v1:O.r-g~A+C_1+R:1",
        "staff",
        MOVED,
        "course-v1:O.r-g~A+C_1+R:1",
    ),
]


@pytest.mark.parametrize("case", LEGACY_CASES, ids=[c.id for c in LEGACY_CASES])
def test_legacy_row(case, people):
    alice, bob = people["alice"], people["bob"]
    legacy_role_model().objects.create(user=bob, org="OrgG", course_id=GOOD_COURSE, role="staff")
    bad = legacy_role_model().objects.create(
        user=alice, org=case.org, course_id=case.course_id, role=case.role
    )
    bad_row = ("alice", case.org, case.course_id, case.role)
    before = legacy_rows()
    good_target = g("bob", "course_staff", GOOD_COURSE)
    set_global_flag(True)

    forward = only(sync_all()[FORWARD])

    assert good_target in casbin_rows()  # the rest moves all the same
    if case.outcome == MOVED:
        assert forward.status == COMPLETED
        assert forward.moved == 2
        casbin_role = "course_admin" if case.role == "instructor" else "course_staff"
        assert casbin_rows() == {good_target, g("alice", casbin_role, case.casbin_scope)}
        assert legacy_rows() == set()
    elif case.outcome == NOT_MIGRATED:
        assert forward.status == COMPLETED
        assert forward.metadata["not_migrated_by_role"] == {case.role: 1}
        assert forward.metadata["could_not_move"] == {}
        assert legacy_rows() == {bad_row}
    else:
        assert forward.status == PARTIAL
        assert forward.counts["could_not_move"] == 1
        [problem] = forward.metadata["could_not_move"][case.outcome]["rows"]
        assert problem["id"] == bad.pk
        assert legacy_rows() == {bad_row}
        assert casbin_rows() == {good_target}
    assert MigrationRun.objects.get(pk=forward.run.pk).status == forward.status
    # verify agrees with the sync: nothing a re-run would move, and the row that cannot
    # move listed under its reason (issue 15).
    report = api.verify(everything=True)
    assert report.drift == []
    expected = {case.outcome: 1} if case.outcome not in (MOVED, NOT_MIGRATED) else {}
    assert dict(report.cannot_move) == expected

    # Round trip: everything comes back exactly as it was.
    set_global_flag(False)
    sync_all()
    assert legacy_rows() == before
    assert casbin_rows() == set()


# --- 2. Casbin rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CasbinCase:
    id: str
    row: tuple[str, str, str, str, str, str, str]  # ptype, v0 .. v5
    outcome: str  # MOVED, IGNORED, NOT_MIGRATED, or the reason it could not move back
    legacy: tuple[str, str, str] = ("", "", "")  # (org, course_id, role) for MOVED


def casbin_case(id_, v0, v1, v2, *extra, ptype="g", outcome, legacy=("", "", "")):
    row = (ptype, v0, v1, v2, *extra, *([""] * (3 - len(extra))))
    return CasbinCase(id_, row, outcome, legacy)


C1 = "course-v1:OrgA+C1+R"
STAFF = "role^course_staff"
CASBIN_CASES = [
    casbin_case(
        "group-subject", "group^x", STAFF, f"course-v1^{C1}", outcome="malformed_casbin_row"
    ),
    casbin_case("empty-subject", "user^", STAFF, f"course-v1^{C1}", outcome="malformed_casbin_row"),
    casbin_case("bare-subject", "alice", STAFF, f"course-v1^{C1}", outcome="malformed_casbin_row"),
    casbin_case(
        "bare-role", "user^alice", "course_staff", f"course-v1^{C1}", outcome="malformed_casbin_row"
    ),
    casbin_case("scope-org-namespace", "user^alice", STAFF, "org^OrgA", outcome=IGNORED),
    casbin_case("scope-lib-namespace", "user^alice", STAFF, "lib^lib:OrgA:L1", outcome=IGNORED),
    casbin_case(
        "scope-not-a-key", "user^alice", STAFF, "course-v1^OrgA", outcome="malformed_casbin_row"
    ),
    casbin_case(
        "scope-two-parts",
        "user^alice",
        STAFF,
        "course-v1^course-v1:OrgA+C1",
        outcome="malformed_casbin_row",
    ),
    casbin_case(
        "scope-glob-invalid-org",
        "user^alice",
        STAFF,
        "course-v1^course-v1:Org%+*",
        outcome="malformed_casbin_row",
    ),
    casbin_case(
        "scope-glob-empty-org",
        "user^alice",
        STAFF,
        "course-v1^course-v1:+*",
        outcome="malformed_casbin_row",
    ),
    casbin_case(
        "scope-caret-in-key",
        "user^alice",
        STAFF,
        "course-v1^course-v1:Org^A+C1+R",
        outcome="malformed_casbin_row",
    ),
    casbin_case(
        "extra-v3", "user^alice", STAFF, f"course-v1^{C1}", "x", outcome="malformed_casbin_row"
    ),
    casbin_case(
        "extra-v5",
        "user^alice",
        STAFF,
        f"course-v1^{C1}",
        "",
        "",
        "x",
        outcome="malformed_casbin_row",
    ),
    casbin_case(
        "policy-row",
        "role^course_staff",
        "act^view",
        f"course-v1^{C1}",
        "allow",
        ptype="p",
        outcome=IGNORED,
    ),
    casbin_case("g2-row", "user^alice", STAFF, f"course-v1^{C1}", ptype="g2", outcome=IGNORED),
    casbin_case(
        "role-case", "user^alice", "role^Course_Staff", f"course-v1^{C1}", outcome=NOT_MIGRATED
    ),
    casbin_case(
        "role-trailing-space",
        "user^alice",
        "role^course_staff ",
        f"course-v1^{C1}",
        outcome=NOT_MIGRATED,
    ),
    casbin_case("unknown-user", "user^ghost", STAFF, f"course-v1^{C1}", outcome="unknown_user"),
    casbin_case("user-case", "user^Alice", STAFF, f"course-v1^{C1}", outcome="unknown_user"),
    # The legacy org column holds 64 characters.
    casbin_case(
        "org-65",
        "user^alice",
        STAFF,
        f"course-v1^course-v1:{'O' * 65}+C+R",
        outcome="value_too_long",
    ),
    casbin_case(
        "org-64",
        "user^alice",
        STAFF,
        f"course-v1^course-v1:{'O' * 64}+C+R",
        outcome=MOVED,
        legacy=("O" * 64, f"course-v1:{'O' * 64}+C+R", "staff"),
    ),
    casbin_case(
        "unicode-key",
        "user^alice",
        STAFF,
        "course-v1^course-v1:Orgé+Cours+2024",
        outcome=MOVED,
        legacy=("Orgé", "course-v1:Orgé+Cours+2024", "staff"),
    ),
    casbin_case(
        "underscore-glob",
        "user^alice",
        "role^course_admin",
        "course-v1^course-v1:Org_A+*",
        outcome=MOVED,
        legacy=("Org_A", "", "instructor"),
    ),
]


@pytest.mark.parametrize("case", CASBIN_CASES, ids=[c.id for c in CASBIN_CASES])
def test_casbin_row(case, people):
    good = g("bob", "course_staff", GOOD_COURSE)
    casbin_rule_model().objects.create(
        **dict(zip(("ptype", "v0", "v1", "v2", "v3", "v4", "v5"), good, strict=True))
    )
    bad = casbin_rule_model().objects.create(
        **dict(zip(("ptype", "v0", "v1", "v2", "v3", "v4", "v5"), case.row, strict=True))
    )
    set_global_flag(False)  # every course role belongs in the legacy table

    rollback = only(sync_all()[ROLLBACK])

    assert ("bob", "OrgG", GOOD_COURSE, "staff") in legacy_rows()
    if case.outcome == MOVED:
        assert (rollback.status, rollback.moved) == (COMPLETED, 2)
        assert legacy_rows() == {("bob", "OrgG", GOOD_COURSE, "staff"), ("alice", *case.legacy)}
        assert casbin_rows() == set()
        # Round trip: the same Casbin rows come back.
        set_global_flag(True)
        sync_all()
        assert casbin_rows() == {good, case.row}
        assert legacy_rows() == set()
        return
    assert casbin_rows() == {case.row}, "the bad row stays, unchanged"
    if case.outcome == IGNORED:
        assert rollback.status == COMPLETED
        assert rollback.counts["scanned"] == 1  # never read
    elif case.outcome == NOT_MIGRATED:
        assert rollback.status == COMPLETED
        assert rollback.counts["not_migrated"] == 1
    else:
        assert rollback.status == PARTIAL
        [problem] = rollback.metadata["could_not_move"][case.outcome]["rows"]
        assert problem["id"] == bad.pk


def test_duplicate_casbin_rows_become_one_legacy_row_and_both_go(people):
    for _ in range(2):
        casbin_rule_model().objects.create(
            **dict(
                zip(
                    ("ptype", "v0", "v1", "v2", "v3", "v4", "v5"),
                    g("alice", "course_staff", C1),
                    strict=True,
                )
            )
        )
    set_global_flag(False)

    rollback = only(sync_all()[ROLLBACK])

    assert (rollback.status, rollback.moved, rollback.counts["created"]) == (COMPLETED, 2, 1)
    assert legacy_rows() == {("alice", "OrgA", C1, "staff")}
    assert casbin_rows() == set()


# --- 3. rollback meeting a legacy row its unique key cannot tell apart ------------------------


CLASH_CASES = {
    # existing legacy row (org, course_id, role)  vs  the Casbin row rolled back
    "org-case": (("orga", "", "staff"), g("alice", "course_staff", "course-v1:OrgA+*")),
    "org-accent": (("Orge", "", "staff"), g("alice", "course_staff", "course-v1:Orgé+*")),
    "course-trailing-space": (("OrgA", f"{C1} ", "staff"), g("alice", "course_staff", C1)),
    "role-trailing-space": (("OrgA", C1, "staff "), g("alice", "course_staff", C1)),
    "role-case": (("OrgA", C1, "Staff"), g("alice", "course_staff", C1)),
}


@pytest.mark.parametrize("existing, row", CLASH_CASES.values(), ids=CLASH_CASES.keys())
def test_rollback_meeting_a_legacy_row_equal_under_the_collation(existing, row, people):
    """MariaDB's utf8mb4 _ci collations (PAD SPACE) treat letter case, accents and trailing
    spaces as equal, so its unique key refuses the row a rollback would write. Whatever the
    database, the row is moved or left in Casbin as ``conflicting_row``: never a failed run,
    and the rest of the scope moves all the same."""
    alice = people["alice"]
    legacy_role_model().objects.create(
        user=alice, org=existing[0], course_id=existing[1], role=existing[2]
    )
    casbin_rule_model().objects.create(
        **dict(zip(("ptype", "v0", "v1", "v2", "v3", "v4", "v5"), row, strict=True))
    )
    good = g("bob", "course_staff", GOOD_COURSE)
    casbin_rule_model().objects.create(
        **dict(zip(("ptype", "v0", "v1", "v2", "v3", "v4", "v5"), good, strict=True))
    )
    set_global_flag(False)

    rollback = only(sync_all()[ROLLBACK])

    assert rollback.status in (COMPLETED, PARTIAL), rollback.metadata.get("error")
    assert ("alice", *existing) in legacy_rows()
    assert ("bob", "OrgG", GOOD_COURSE, "staff") in legacy_rows()
    if row in casbin_rows():
        assert rollback.status == PARTIAL
        [problem] = rollback.metadata["could_not_move"]["conflicting_row"]["rows"]
        assert problem["scope"] == row[3]
    else:
        assert connection.vendor != "mysql", "MariaDB's unique key cannot hold both rows"
        assert rollback.status == COMPLETED
        assert len(legacy_rows()) == 3


# --- 4. overrides with malformed keys (automatic moves on) ------------------------------------


BAD_COURSE_OVERRIDES = {
    "not-a-key": "not-a-key",
    "two-parts": "course-v1:OrgA+C1",
    "trailing-space": f"{C1} ",
    "upper-case-prefix": "COURSE-V1:OrgA+C1+R",
    "percent": "course-v1:Org%+C1+R",
    "quote": "course-v1:Org'A+C1+R",
    "empty": "",
}
BAD_ORG_OVERRIDES = {
    "percent": "Org%",
    "plus": "Org+A",
    "caret": "Org^A",
    "quote": "Org'A",
    "space": "Org A",
    "trailing-space": "OrgA ",
    "empty": "",
}


@pytest.fixture
def roles_everywhere(people):
    """Legacy roles in OrgA (a course and org-wide) and in the good course."""
    alice = people["alice"]
    legacy_role_model().objects.create(user=alice, org="OrgA", course_id=C1, role="staff")
    legacy_role_model().objects.create(user=alice, org="OrgA", course_id="", role="instructor")
    legacy_role_model().objects.create(user=alice, org="OrgG", course_id=GOOD_COURSE, role="staff")
    return legacy_rows()


def save_override(model, **fields):
    row = model(waffle_flag=flags.flag_name(), override_choice="on", enabled=True, **fields)
    row.save()
    return row


@override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)
@pytest.mark.parametrize("key", BAD_COURSE_OVERRIDES.values(), ids=BAD_COURSE_OVERRIDES.keys())
def test_course_override_with_a_malformed_key_is_saved_and_moves_nothing(key, roles_everywhere):
    from authz_migration.conf import course_override_model

    row = save_override(course_override_model(), course_id=key)

    assert course_override_model().objects.filter(pk=row.pk).exists()
    result = getattr(row, RESULT_ATTRIBUTE)
    assert result.outcome is None
    assert "is not a course key" in result.reason and repr(key) in result.reason
    assert runs() == []
    assert legacy_rows() == roles_everywhere
    assert casbin_rows() == set()
    # Exact keys: a look-alike (MariaDB compares trailing spaces and case away) is not C1's.
    assert not flags.is_authz_enabled(C1)


@override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)
@pytest.mark.parametrize("org", BAD_ORG_OVERRIDES.values(), ids=BAD_ORG_OVERRIDES.keys())
def test_org_override_with_an_invalid_org_is_saved_and_moves_nothing(org, roles_everywhere):
    from authz_migration.conf import org_override_model

    row = save_override(org_override_model(), org=org)

    assert org_override_model().objects.filter(pk=row.pk).exists()
    result = getattr(row, RESULT_ATTRIBUTE)
    assert result.outcome is None
    assert "is not a valid org name" in result.reason
    assert runs() == []
    assert legacy_rows() == roles_everywhere
    assert not flags.is_authz_enabled(C1)
    assert not flags.org_effective_state("OrgA").enabled


@override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)
def test_course_override_for_a_key_too_long_for_casbin_reports_the_rows(people):
    from authz_migration.conf import course_override_model

    key = long_key(255)
    legacy_role_model().objects.create(
        user=people["alice"], org="OrgL", course_id=key, role="staff"
    )

    row = save_override(course_override_model(), course_id=key)

    outcome = getattr(row, RESULT_ATTRIBUTE).outcome
    assert outcome.status == PARTIAL
    assert outcome.metadata["could_not_move"]["value_too_long"]["count"] == 1
    assert outcome.run.scope_key == key  # the run's scope_key column holds 255 characters
    assert legacy_rows() == {("alice", "OrgL", key, "staff")}
    assert flags.is_authz_enabled(key)  # the flag change stands; verify names the row
    report = api.verify(everything=True)
    assert (report.drift, dict(report.cannot_move)) == ([], {"value_too_long": 1})


# --- 5. invalid keys at the API and the command -----------------------------------------------


BAD_ORGS = {
    "percent": "Org%",
    "underscore-percent": "Org_%",
    "quote": "Org'A",
    "sql": "OrgA'; DROP TABLE casbin_rule; --",
    "plus": "Org+A",
    "caret": "Org^A",
    "space": "Org A",
    "empty": "",
}
BAD_COURSES = {
    "two-parts": "course-v1:OrgA+C1",
    "percent": "course-v1:Org%+C1+R",
    "quote": "course-v1:OrgA+C1+R'--",
    "caret": "course-v1:OrgA+C^1+R",
    "trailing-space": f"{C1} ",
}


@pytest.mark.parametrize("org", BAD_ORGS.values(), ids=BAD_ORGS.keys())
def test_invalid_org_is_refused_by_the_api_and_the_command(org, roles_everywhere):
    for call in (
        lambda: api.sync_org(org),
        lambda: api.migrate_org(org, True, force=True),
        lambda: api.verify_scope(orgs=[org]),
        lambda: api.plan("sync", orgs=[org]),
    ):
        with pytest.raises(InvalidOrg, match="is not a valid org name") as error:
            call()
        assert repr(org) in str(error.value)
    for action in ("sync", "forward", "rollback", "verify"):
        extra = [] if action == "verify" else ["--no-input"]
        with pytest.raises(CommandError) as error:
            call_command("authz_migrate", action, "--org", org, *extra, stdout=io.StringIO())
        assert error.value.returncode == 2
        assert repr(org) in str(error.value)
    assert runs() == []
    assert legacy_rows() == roles_everywhere
    assert casbin_rows() == set()


@pytest.mark.parametrize("key", BAD_COURSES.values(), ids=BAD_COURSES.keys())
def test_malformed_course_key_is_refused_by_the_api_and_the_command(key, roles_everywhere):
    for call in (
        lambda: api.sync_course(key),
        lambda: api.migrate_course(key, True, force=True),
        lambda: api.verify_scope(courses=[key]),
        lambda: flags.is_authz_enabled(key),
    ):
        with pytest.raises(InvalidCourseKey) as error:
            call()
        assert repr(key) in str(error.value)
    with pytest.raises(CommandError) as error:
        call_command("authz_migrate", "sync", "--course", key, "--no-input", stdout=io.StringIO())
    assert error.value.returncode == 2
    assert runs() == []
    assert legacy_rows() == roles_everywhere


# --- 6. orgs that share a prefix, a LIKE wildcard, or a collation ----------------------------


NEIGHBOURS = {
    # org moved  : its neighbour, whose roles must never move with it
    "prefix": ("OrgA", "OrgAB"),
    "prefixed": ("OrgAB", "OrgA"),
    "underscore-is-not-a-wildcard": ("Org_A", "OrgXA"),
    "underscore-prefix": ("Org_", "Org_A"),
    "case": ("OrgA", "orga"),
    "case-reversed": ("orga", "OrgA"),
    "accent": ("Orgé", "Orge"),
    "accent-reversed": ("Orge", "Orgé"),
    "unicode-prefix": ("組織", "組織二"),
}


@override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("org, other", NEIGHBOURS.values(), ids=NEIGHBOURS.keys())
def test_an_org_move_never_touches_its_neighbours_roles(org, other, make_user):
    """LIKE patterns are escaped (``_`` and ``%`` are literal), keys end with ``+`` so OrgA
    never matches OrgAB, and keys are compared exactly even where the collation (MariaDB) or
    ``LIKE`` (SQLite) ignores case or accents. Under MariaDB's collations the lock rows of
    ``org:OrgA`` and ``org:orga`` are one row: the move takes it without waiting on itself
    (the test commits, so the guard creates lock rows as in production)."""
    from authz_migration.conf import course_override_model, org_override_model

    mine, theirs = make_user("mine"), make_user("theirs")
    for user, name in ((mine, org), (theirs, other)):
        legacy_role_model().objects.create(
            user=user, org=name, course_id=f"course-v1:{name}+C1+R", role="staff"
        )
        legacy_role_model().objects.create(user=user, org=name, course_id="", role="instructor")
    casbin_rule_model().objects.create(
        **dict(
            zip(
                ("ptype", "v0", "v1", "v2", "v3", "v4", "v5"),
                g("theirs", "course_admin", f"course-v1:{other}+C2+R"),
                strict=True,
            )
        )
    )
    # A course of the neighbour pinned off must not count as one of ours.
    course_override_model()(
        waffle_flag=flags.flag_name(),
        course_id=f"course-v1:{other}+C1+R",
        override_choice="off",
        enabled=True,
    ).save()
    theirs_legacy = {r for r in legacy_rows() if r[0] == "theirs"}
    theirs_casbin = casbin_rows()

    on = org_override_model()(
        waffle_flag=flags.flag_name(), org=org, override_choice="on", enabled=True
    )
    on.save()
    forward = getattr(on, RESULT_ATTRIBUTE).outcome

    assert (forward.status, forward.moved) == (COMPLETED, 2)
    assert forward.metadata["excluded_courses"]["count"] == 0
    assert {r for r in legacy_rows() if r[0] == "theirs"} == theirs_legacy
    assert casbin_rows() == theirs_casbin | {
        g("mine", "course_staff", f"course-v1:{org}+C1+R"),
        g("mine", "course_admin", f"course-v1:{org}+*"),
    }
    assert [o.moved for o in api.sync_org(org)] == [0]

    off = org_override_model()(
        waffle_flag=flags.flag_name(), org=org, override_choice="off", enabled=True
    )
    off.save()

    assert getattr(off, RESULT_ATTRIBUTE).outcome.moved == 2
    assert casbin_rows() == theirs_casbin
    assert {r for r in legacy_rows() if r[0] == "mine"} == {
        ("mine", org, f"course-v1:{org}+C1+R", "staff"),
        ("mine", org, "", "instructor"),
    }
    assert {r for r in legacy_rows() if r[0] == "theirs"} == theirs_legacy


# --- 7. a host's legacy table without the unique key or the foreign key ----------------------


class HostRole(models.Model):
    """A host's legacy role table as some sites have it: no unique key over (user, org,
    course_id, role) and no foreign key constraint on ``user``. Registered under an app label
    that is not installed, so no migration, check or flush ever sees it."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    org = models.CharField(max_length=64, blank=True)
    course_id = models.CharField(max_length=255, blank=True)
    role = models.CharField(max_length=64)

    class Meta:
        app_label = "authz_bad_input_host"
        db_table = "authz_test_host_role"

    def __str__(self) -> str:
        return f"{self.user_id} {self.role} {self.course_id or self.org}"


@pytest.fixture
def host_table(transactional_db, monkeypatch):
    """``HostRole`` as the legacy role model, its table created for the test."""
    with connection.schema_editor() as editor:
        editor.create_model(HostRole)
    real = conf._model
    monkeypatch.setattr(
        conf,
        "_model",
        lambda setting: HostRole if setting == "LEGACY_ROLE_MODEL" else real(setting),
    )
    try:
        yield HostRole
    finally:
        monkeypatch.undo()
        with connection.schema_editor() as editor:
            editor.delete_model(HostRole)


def test_duplicate_legacy_rows_both_go_and_become_one_casbin_row(host_table, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    for _ in range(2):
        host_table.objects.create(user=alice, org="OrgA", course_id=C1, role="staff")
    host_table.objects.create(user=bob, org="OrgA", course_id=C1, role="staff")
    set_global_flag(True)

    forward = only(sync_all()[FORWARD])

    assert (forward.status, forward.moved, forward.counts["created"]) == (COMPLETED, 3, 2)
    assert host_table.objects.count() == 0
    assert casbin_rows() == {g("alice", "course_staff", C1), g("bob", "course_staff", C1)}

    set_global_flag(False)
    sync_all()
    assert sorted(host_table.objects.values_list("user__username", flat=True)) == ["alice", "bob"]
    assert casbin_rows() == set()


def test_legacy_row_of_a_deleted_user_stays_as_user_missing(host_table, make_user):
    alice, gone = make_user("alice"), make_user("gone")
    host_table.objects.create(user=alice, org="OrgA", course_id=C1, role="staff")
    orphan = host_table.objects.create(user=gone, org="OrgA", course_id=C1, role="instructor")
    gone_id = gone.pk
    get_user_model().objects.filter(pk=gone_id).delete()  # no constraint: the row stays
    set_global_flag(True)

    forward = only(sync_all()[FORWARD])

    assert (forward.status, forward.moved) == (PARTIAL, 1)
    [problem] = forward.metadata["could_not_move"]["user_missing"]["rows"]
    assert (problem["id"], problem["user_id"]) == (orphan.pk, gone_id)
    assert list(host_table.objects.values_list("pk", "user_id", "role")) == [
        (orphan.pk, gone_id, "instructor")
    ]
    assert casbin_rows() == {g("alice", "course_staff", C1)}
    # verify names the row under its reason until someone cleans up; no sync moves it
    report = api.verify(everything=True)
    assert (report.drift, dict(report.cannot_move)) == ([], {"user_missing": 1})
    assert report.cannot_move_rows["user_missing"] == [problem]
