"""Security properties, on every database:

- run metadata names users by username only, never by email or other personal data, whatever
  the move met (rows that could not move, failures with tracebacks, skipped runs);
- runs are append-only for everyone in the admin, superusers included, and the override
  admin enforces model permissions for its pages and its actions;
- forced and destructive command actions need a typed "yes" or ``--no-input`` (the full set
  of confirmation tests is in tests/test_command.py: ``test_declining_the_confirmation_*``,
  ``test_no_answer_at_all_is_a_no``, ``test_confirmation_of_a_forced_move_*``,
  ``test_refusal_comes_before_the_confirmation``); here, the forced case once more;
- SQL is never assembled from input: every ``cursor.execute`` in the app interpolates quoted
  identifiers and placeholders only, values always travel as parameters (checked on the
  syntax tree below; ruff's S608 flags the same lines, each with a justified ``noqa``).
"""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError
from django.test import override_settings
from django.urls import reverse

import authz_migration
from authz_migration import api, flags, moves, sqlmoves, stores
from authz_migration.conf import course_override_model, legacy_role_model, org_override_model
from authz_migration.management.commands import authz_migrate
from authz_migration.models import MigrationRun
from authz_migration.stores import Selection, casbin_rule_model
from tests.helpers import email_of, lock_rows_in_test_transaction

pytestmark = pytest.mark.django_db

ORG = "OrgA"
C1, C2 = "course-v1:OrgA+C1+2024", "course-v1:OrgA+C2+2024"
# The people fixture's addresses, and the admin's: none may appear where it must not.
EMAILS = {name: email_of(name) for name in ("alice", "bob", "carol", "admin")}
PACKAGE = Path(authz_migration.__file__).parent


@pytest.fixture(autouse=True)
def _lock_rows_in_the_test_transaction(monkeypatch):
    """Lock rows in the test's own transaction (see the helper)."""
    lock_rows_in_test_transaction(monkeypatch)


def casbin(user: str, role: str, key: str, v3: str = "") -> None:
    casbin_rule_model().objects.create(
        ptype="g", v0=f"user^{user}", v1=f"role^{role}", v2=f"course-v1^{key}", v3=v3, v4="", v5=""
    )


def set_global_flag(on: bool) -> None:
    from waffle import get_waffle_flag_model

    get_waffle_flag_model().objects.update_or_create(
        name=flags.flag_name(), defaults={"everyone": on}
    )


# --- run metadata: usernames only -------------------------------------------------------------


@pytest.fixture
def runs_of_every_kind(people, make_user, monkeypatch):
    """Runs that met everything metadata can tell about: moved rows, rows that could not
    move (by user, by subject), a failed move with its traceback, a skipped run, and runs
    triggered by a user, through the API, the command and an override save."""
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    admin_user = make_user("admin", email=EMAILS["admin"], is_staff=True, is_superuser=True)
    roles = legacy_role_model().objects
    roles.create(user=alice, org=ORG, course_id=C1, role="staff")
    roles.create(user=bob, org=ORG, course_id="", role="instructor")
    roles.create(user=carol, org=ORG, course_id="course-v1:OrgA+C1", role="staff")  # malformed
    too_long = "course-v1:OrgA+" + "C" * 235 + "+R"  # fits the table, not casbin_rule.v2
    roles.create(user=alice, org=ORG, course_id=too_long, role="staff")
    roles.create(user=alice, org="Org A", course_id="", role="staff")  # invalid org
    # A course of an org without overrides: the global flip below leaves it behind.
    roles.create(user=carol, org="OrgZ", course_id="course-v1:OrgZ+Z1+R", role="staff")
    casbin("ghost", "course_staff", C2)  # unknown user
    casbin("carol", "course_staff", C2, v3="x")  # malformed row
    casbin("bob", "course_admin", C2)

    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True):
        # An override save by a user: the org moves forward (partial: rows that cannot move).
        row = org_override_model()(
            waffle_flag=flags.flag_name(), org=ORG, override_choice="on", enabled=True
        )
        row.changed_by = admin_user
        row.save()
        # A failed move (the injected error carries no personal data; the traceback is ours).
        real = moves.insert_legacy

        def fail(keys):
            real(keys)
            raise DatabaseError("injected failure")

        monkeypatch.setattr(moves, "insert_legacy", fail)
        row = course_override_model()(
            waffle_flag=flags.flag_name(), course_id=C2, override_choice="off", enabled=True
        )
        row.changed_by = admin_user
        row.save()
        monkeypatch.setattr(moves, "insert_legacy", real)
        # A global flag flip with rows left behind: a skipped run that tells the operator.
        set_global_flag(False)
        set_global_flag(True)
    # The command and the API, with a rollback that meets an unknown user and a bad row.
    set_global_flag(False)
    with pytest.raises(CommandError) as incomplete:  # exit 6: some rows cannot move
        call_command("authz_migrate", "sync", "--all", "--no-input", stdout=io.StringIO())
    assert incomplete.value.returncode == authz_migrate.EXIT_STUCK
    api.sync_org(ORG, user=admin_user)
    statuses = set(MigrationRun.objects.values_list("status", flat=True))
    assert {"partial_success", "failed", "skipped"} <= statuses, statuses
    return admin_user


def test_run_metadata_names_users_by_username_never_by_email(runs_of_every_kind):
    runs = list(MigrationRun.objects.all())
    assert len(runs) >= 5
    text = json.dumps([run.metadata for run in runs], ensure_ascii=False)
    assert "@" not in text, "an email address (or part of one) in run metadata"
    for email in EMAILS.values():
        assert email.split("@")[0] not in text
    # The rows that could not move name their user by username (or Casbin subject).
    assert '"user": "alice"' in text
    assert '"subject": "user^carol"' in text
    assert "Traceback" in text  # the failed run's traceback is there, and holds no address


def test_status_output_names_users_by_username(runs_of_every_kind):
    out = io.StringIO()
    call_command("authz_migrate", "status", "--json", "--limit", "100", stdout=out)
    assert "@" not in out.getvalue()
    assert {run["triggered_by"] for run in json.loads(out.getvalue())["runs"]} >= {"admin"}


def test_run_pages_in_the_admin_show_no_email(runs_of_every_kind, client):
    client.force_login(runs_of_every_kind)
    pages = [client.get(reverse("admin:authz_migration_migrationrun_changelist"))]
    for run in MigrationRun.objects.all():
        pages.append(
            client.get(reverse("admin:authz_migration_migrationrun_change", args=[run.pk]))
        )
    for page in pages:
        assert page.status_code == 200
        for email in EMAILS.values():
            assert email not in page.content.decode()


# --- runs are append-only; model permissions in the admin -------------------------------------


def run_url(view: str, *args) -> str:
    return reverse(f"admin:authz_migration_migrationrun_{view}", args=args)


@pytest.fixture
def a_run():
    return MigrationRun.objects.create(
        migration_type="forward",
        scope_type="org",
        scope_key=ORG,
        trigger="command",
        status="completed",
        metadata={"counts": {"moved": 1}},
    )


def staff(make_user, *codenames, superuser=False):
    user = make_user(is_staff=True, is_superuser=superuser)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="authz_migration", codename__in=codenames)
    )
    return user


@pytest.mark.parametrize(
    "who", ["superuser", "staff-with-every-run-permission"], ids=lambda who: who
)
def test_nobody_adds_changes_or_deletes_a_run(who, a_run, make_user, client):
    codenames = [f"{p}_migrationrun" for p in ("add", "change", "delete", "view")]
    client.force_login(staff(make_user, *codenames, superuser=who == "superuser"))
    before = MigrationRun.objects.values().get(pk=a_run.pk)

    assert client.get(run_url("change", a_run.pk)).status_code == 200  # readable
    # Add and delete send a reader back, with a message, instead of a bare 403 page.
    assert client.get(run_url("add")).url == run_url("changelist")
    assert client.post(run_url("add"), {"status": "completed"}).url == run_url("changelist")
    assert client.post(run_url("change", a_run.pk), {"status": "failed"}).status_code == 403
    deleted = client.post(run_url("delete", a_run.pk), {"post": "yes"})
    assert deleted.url == run_url("change", a_run.pk)
    assert MigrationRun.objects.count() == 1
    # The changelist offers no bulk delete, and posting it anyway deletes nothing.
    changelist = client.get(run_url("changelist"))
    assert "delete_selected" not in changelist.content.decode()
    client.post(
        run_url("changelist"),
        {
            "action": "delete_selected",
            admin.helpers.ACTION_CHECKBOX_NAME: [a_run.pk],
            "post": "yes",
        },
    )
    assert MigrationRun.objects.values().get(pk=a_run.pk) == before


def test_runs_are_hidden_from_staff_without_the_view_permission(a_run, make_user, client):
    client.force_login(staff(make_user))
    assert client.get(run_url("changelist")).status_code == 403
    assert client.get(run_url("change", a_run.pk)).status_code == 403


@pytest.mark.parametrize(
    "model, field, value",
    [
        ("courseflagoverride", "course_id", C1),
        ("orgflagoverride", "org", ORG),
    ],
    ids=["course", "org"],
)
def test_override_pages_and_actions_follow_model_permissions(
    model, field, value, make_user, client, people
):
    """No permission: no page. View: the list, the "Verify" action, no toggling and no
    "Sync now". Change: toggling. Nobody deletes override rows (they are the flag's history)."""
    legacy_role_model().objects.create(user=people["alice"], org=ORG, course_id=C1, role="staff")
    legacy_role_model().objects.create(user=people["alice"], org=ORG, course_id="", role="staff")
    overrides = course_override_model() if field == "course_id" else org_override_model()
    existing = overrides(
        waffle_flag=flags.flag_name(), override_choice="on", enabled=True, **{field: value}
    )
    existing.save()  # automatic moves are off: nothing moved
    set_global_flag(False)
    listing, add = (
        reverse(f"admin:authz_migration_{model}_{view}") for view in ("changelist", "add")
    )
    form = {
        "waffle_flag": flags.flag_name(),
        field: value,
        "override_choice": "off",
        "enabled": "on",
    }
    rows_before = overrides.objects.count()

    client.force_login(staff(make_user))
    assert client.get(listing).status_code == 403
    assert client.post(add, form).status_code == 403

    client.force_login(staff(make_user, f"view_{model}"))
    page = client.get(listing)
    assert page.status_code == 200
    assert "verify_scopes" in page.content.decode()
    assert "sync_scopes" not in page.content.decode()
    assert client.post(add, form).status_code == 403
    # Posting "Sync now" anyway does nothing: the action is not this user's.
    client.post(
        listing, {"action": "sync_scopes", admin.helpers.ACTION_CHECKBOX_NAME: [existing.pk]}
    )
    assert not MigrationRun.objects.exists()
    assert overrides.objects.count() == rows_before

    superuser = staff(make_user, superuser=True)
    client.force_login(superuser)
    delete = reverse(f"admin:authz_migration_{model}_delete", args=[existing.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert client.post(add, form).status_code == 302
    assert overrides.objects.count() == rows_before + 1
    assert overrides.objects.order_by("-id").first().changed_by == superuser


# --- forced command actions need confirmation ---------------------------------------------------


@pytest.mark.parametrize("answer", ["", "no", "y", "YES please"], ids=repr)
def test_a_forced_move_without_no_input_needs_a_typed_yes(answer, people, monkeypatch):
    legacy_role_model().objects.create(user=people["alice"], org=ORG, course_id=C1, role="staff")
    set_global_flag(False)  # forward contradicts the flag: --force is needed
    monkeypatch.setattr("builtins.input", lambda *args: answer)

    with pytest.raises(CommandError) as error:
        call_command("authz_migrate", "forward", "--org", ORG, "--force", stdout=io.StringIO())

    assert error.value.returncode == authz_migrate.EXIT_REFUSED
    assert not MigrationRun.objects.exists()
    assert not casbin_rule_model().objects.exists()

    call_command(
        "authz_migrate", "forward", "--org", ORG, "--force", "--no-input", stdout=io.StringIO()
    )
    assert casbin_rule_model().objects.count() == 1


# --- SQL only with parameters -----------------------------------------------------------------


def _assignments(function: ast.AST) -> dict[str, list[ast.expr]]:
    found: dict[str, list[ast.expr]] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, []).append(node.value)
                elif isinstance(target, ast.Tuple) and _is_compiled_query(node.value):
                    # sql, params = queryset.query.sql_with_params(): the ORM's own SQL
                    first = target.elts[0]
                    if isinstance(first, ast.Name):
                        found.setdefault(first.id, []).append(node.value)
    return found


def _is_compiled_query(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "sql_with_params"
    )


def _is_fragment(node: ast.expr, names: dict, seen: frozenset = frozenset()) -> bool:
    """Whether ``node`` can only evaluate to SQL the code wrote itself: string constants,
    quoted identifiers (``quote_name``), column types (``db_type``), integers (``int``),
    placeholders, and joins, f-strings and conditionals of those."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return all(
            _is_fragment(part.value if isinstance(part, ast.FormattedValue) else part, names, seen)
            for part in node.values
        )
    if isinstance(node, ast.List):
        return all(_is_fragment(item, names, seen) for item in node.elts)
    if isinstance(node, ast.Starred):
        return _is_fragment(node.value, names, seen)
    if isinstance(node, ast.IfExp):
        return _is_fragment(node.body, names, seen) and _is_fragment(node.orelse, names, seen)
    if isinstance(node, ast.Name):
        values = names.get(node.id)
        if not values or node.id in seen:
            return False
        return all(_is_fragment(value, names, seen | {node.id}) for value in values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        # ["%s"] * n: n placeholders
        return isinstance(node.left, ast.List) and all(
            _is_fragment(item, names, seen) for item in node.left.elts
        )
    if _is_compiled_query(node):
        return True  # SQL the ORM compiled, its values kept apart as parameters
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        # int(...) renders as digits only (a JSON path's position); a helper named *_sql
        # builds SQL fragments, and sql_builders() checks its returns.
        return node.func.id == "int" or node.func.id.endswith("_sql")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr in ("quote_name", "db_type"):
            return True
        if node.func.attr == "join" and isinstance(node.func.value, ast.Constant):
            [argument] = node.args
            if isinstance(argument, (ast.GeneratorExp, ast.ListComp)):
                return _is_fragment(argument.elt, names, seen)
            return _is_fragment(argument, names, seen)
    return False


def sql_calls() -> list[tuple[str, bool, bool]]:
    """Every ``*.execute(...)`` / ``*.executemany(...)`` with SQL in the app: (file, line,
    SQL made of the code's own fragments only, values passed as parameters)."""
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            names = _assignments(function)
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue  # plain execute(move, ...) is the orchestrator's, not SQL
                if node.func.attr not in ("execute", "executemany") or not node.args:
                    continue
                sql = node.args[0]
                constant = isinstance(sql, ast.Constant)
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                if path.name == "sqlmoves.py" and isinstance(sql, ast.Starred):
                    # (text, params) from a statement builder: checked by rendering every
                    # statement with hostile values, in the test below this one.
                    calls.append((where, _is_statement_builder(sql.value), True))
                    continue
                calls.append(
                    (where, constant or _is_fragment(sql, names), constant or len(node.args) >= 2)
                )
    return calls


def _is_statement_builder(node: ast.expr) -> bool:
    """``statements.insert(...)`` / ``statements.delete(...)`` of :mod:`sqlmoves`."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "statements"
        and node.func.attr
        in ("present_sources", "insert", "delete", "delete_batch", "one_statement", "plain_rows")
    )


def sql_builders() -> list[tuple[str, bool]]:
    """Every helper named ``*_sql`` in the app (which :func:`_is_fragment` trusts): (file,
    line, every value it returns is made of the code's own fragments only)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef) and function.name.endswith("_sql"):
                names = _assignments(function)
                returns = [n.value for n in ast.walk(function) if isinstance(n, ast.Return)]
                found.append(
                    (
                        f"{path.relative_to(PACKAGE.parent)}:{function.lineno}",
                        bool(returns)
                        and all(v is not None and _is_fragment(v, names) for v in returns),
                    )
                )
    return found


def test_sql_builders_return_only_the_codes_own_fragments():
    builders = sql_builders()
    assert builders, "stores._array_sql builds the PostgreSQL array fragments"
    assert [b for b in builders if not b[1]] == []


def test_every_sql_statement_interpolates_identifiers_only_and_passes_values_as_parameters():
    calls = sql_calls()
    assert len(calls) >= 6, calls  # the guard's lock statements and the stores' inserts
    assert [c for c in calls if not (c[1] and c[2])] == []


HOSTILE = "x'); DROP TABLE auth_user; --"


@pytest.mark.parametrize(
    "selection",
    [
        Selection(org=HOSTILE),
        Selection(courses=(f"course-v1:{HOSTILE}+C+R",)),
        Selection(everything=True),
    ],
    ids=["org", "courses", "everything"],
)
def test_statements_the_database_moves_by_carry_every_value_as_a_parameter(selection):
    """What sqlmoves writes as SQL is its own text; every value (org, courses, roles, the
    courses and orgs left out, the key range) is a parameter, whatever it holds."""
    rule = sqlmoves.Rule((f"course-v1:{HOSTILE}+D+R",), (HOSTILE,))
    roles = {f"staff{HOSTILE}": f"course_staff{HOSTILE}", "instructor": "course_admin"}
    statements = []
    with override_settings(AUTHZ_MIGRATION_ROLE_MAP=roles):
        forward = sqlmoves._Forward(selection, rule, 7, 9)
        backward = sqlmoves._Rollback(selection, rule, 7, 9)
        statements += [forward.present_sources(), forward.insert(True, [HOSTILE])]
        statements += [forward.delete()]
        statements += [backward.present_sources(), backward.insert([HOSTILE])]
        statements += [backward.delete(True), forward.plain_rows(), backward.plain_rows()]
        # PostgreSQL's, which bound their batch themselves; SQLite's DELETE of a whole batch.
        kinds = (sqlmoves._Forward, sqlmoves._Rollback)
        forward = sqlmoves._Forward(selection, rule, 7, sqlmoves.BOUND)
        backward = sqlmoves._Rollback(selection, rule, 7, sqlmoves.BOUND)
        keys = [stores.batch_keys(selection, legacy, 7, 2) for legacy in (True, False)]
        whole = [kind(selection, rule, 7, 9) for kind in kinds]
        statements += [whole[0].delete_batch(), whole[1].delete_batch(True)]
        statements += [forward.one_statement(True, keys[0])]
        statements += [forward.one_statement(False, keys[0]), backward.one_statement(True, keys[1])]
    for text, params in statements:
        assert "DROP" not in text and "staff" not in text and "course_staff" not in text
        assert text.count("%s") == len(params) > 0
        # (The ORM's LIKE patterns escape the value's "_".)
        unescaped = [str(p).replace("\\_", "_") for p in params]
        assert any(HOSTILE in p for p in unescaped) or selection.everything


def test_the_sql_check_catches_a_value_in_an_f_string():
    """The check above is only worth something if it fires."""
    source = """
def lookup(connection, org):
    table = connection.ops.quote_name("t")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE org = '{org}'")
        cursor.execute("SELECT * FROM t WHERE org = '%s'" % org)
        cursor.execute(f"SELECT * FROM {table} WHERE org = %s", [org])
"""
    function = ast.parse(source).body[0]
    names = _assignments(function)
    sqls = [
        node.args[0]
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "execute"
    ]
    assert [_is_fragment(sql, names) for sql in sqls] == [False, False, True]


def test_a_sql_builder_that_returns_a_value_is_caught():
    source = """
def good_sql(connection, field):
    cast = field.db_type(connection)
    return f"%s::{cast}[]" if cast else "%s"

def bad_sql(connection, value):
    return f"(string_to_array('{value}', chr(31)))"
"""
    verdicts = []
    for function in ast.parse(source).body:
        names = _assignments(function)
        returns = [n.value for n in ast.walk(function) if isinstance(n, ast.Return)]
        verdicts.append(all(_is_fragment(v, names) for v in returns))
    assert verdicts == [True, False]


def test_no_raw_querysets_or_extra_clauses_in_the_app():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for needle in (".raw(", ".extra(", "RawSQL("):
            assert needle not in text, f"{path}: {needle}"


ODD_NAMES = ["o'brien", 'say "hi"', "back\\slash", "tab\there", "smile😀", "café", "%_"]


def test_values_with_quotes_backslashes_and_emoji_move_there_and_back_exactly(make_user):
    """Values travel to the database as parameters (an array, a JSON document or one per
    value, by database): every character arrives as written, both ways."""
    model = legacy_role_model()
    users = [make_user(name) for name in ODD_NAMES]
    model.objects.bulk_create(
        [model(user=u, org="OrgA", course_id="course-v1:OrgA+Café+R", role="staff") for u in users]
    )
    before = sorted(model.objects.values_list("user__username", "org", "course_id", "role"))

    forward = api.migrate_org("OrgA", True, force=True)
    subjects = sorted(casbin_rule_model().objects.values_list("v0", flat=True))
    back = api.migrate_org("OrgA", False, force=True)

    assert (forward.moved, back.moved) == (len(ODD_NAMES), len(ODD_NAMES))
    assert subjects == sorted(f"user^{name}" for name in ODD_NAMES)
    after = sorted(model.objects.values_list("user__username", "org", "course_id", "role"))
    assert after == before
