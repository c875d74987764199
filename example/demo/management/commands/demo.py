"""``manage.py demo``: play a short migration scenario and print what happened at each step.

It seeds legacy roles in two orgs, then saves course and org overrides exactly as an operator
would in the admin. Each save goes through the app's ``post_save`` receiver, which moves the
affected roles in the save's own transaction; the command only reads what the receiver left
on the instance (``_authz_migration_result``) and in the tables, so the output shows the app's
real behaviour, not a re-enactment of it.

Without ``--reset`` on a database that already holds demo data, nothing is changed: the
current state is printed instead, so running the command twice never mixes two scenarios.
"""

from __future__ import annotations

import os
import sys
import textwrap

from casbin_adapter.models import CasbinRule
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.core.management.color import no_style
from django.db import connection, transaction
from waffle import get_waffle_flag_model

from authz_migration.automatic import RESULT_ATTRIBUTE
from authz_migration.flags import effective_state, flag_name
from authz_migration.models import (
    CourseAccessRole,
    CourseFlagOverride,
    MigrationRun,
    OrgFlagOverride,
)

USERS = ["alice", "bob", "carol", "dave"]

CS101 = "course-v1:OpenedX+CS101+2024"
CS102 = "course-v1:OpenedX+CS102+2024"
DS201 = "course-v1:OpenedX+DS201+2025"
INTRO = "course-v1:DemoX+Intro+2024"
ADV = "course-v1:DemoX+Adv+2025"
COURSES = [CS101, CS102, DS201, INTRO, ADV]
# A legacy row with a key that is not course-v1:ORG+COURSE+RUN: the org move must leave it
# in place and report it, making that run a partial success.
BAD_KEY = "course-v1:OpenedX+Intro to CS+2024"

# (user, legacy role, org, course_id); a blank course_id is an org-wide role.
LEGACY_ROLES = [
    ("alice", "instructor", "OpenedX", CS101),
    ("bob", "staff", "OpenedX", CS101),
    ("carol", "beta_testers", "OpenedX", CS101),
    ("dave", "finance_admin", "OpenedX", CS101),  # not an authoring role: never moves
    ("bob", "instructor", "OpenedX", CS102),
    ("dave", "staff", "OpenedX", CS102),
    ("carol", "staff", "OpenedX", DS201),
    ("alice", "staff", "OpenedX", ""),  # org-wide: every course of OpenedX
    ("dave", "staff", "OpenedX", BAD_KEY),
    ("alice", "instructor", "DemoX", INTRO),
    ("dave", "beta_testers", "DemoX", INTRO),
    ("bob", "staff", "DemoX", ADV),
]


def table(headers: list[str], rows: list[list], indent: int = 2) -> str:
    """Left-aligned columns sized to their widest cell."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if not rows:
        lines.append("(none)")
    return "\n".join(" " * indent + line.rstrip() for line in lines)


def interpreter() -> str:
    """The python running this command, relative to the working directory when inside it
    (``.venv/bin/python`` from the repository root): the one that has the app installed."""
    path = sys.executable or "python"
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def system(enabled: bool) -> str:
    return "on  -> Casbin" if enabled else "off -> legacy"


class Command(BaseCommand):
    help = "Seed demo roles, flip course and org overrides, and show how the roles move."

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Wipe the demo data (roles, overrides, Casbin rows, runs) and replay.",
        )

    def handle(self, *args, reset: bool = False, **options):
        self.step_no = 0
        if reset:
            self.reset()
        elif self.has_data():
            self.heading("Demo data already present: showing the current state")
            self.say("(run `manage.py demo --reset` to wipe it and replay the scenario)")
            self.show_state()
            self.show_runs()
            self.admin_hint(self.ensure_admin())
            return
        admin = self.ensure_admin()
        self.seed()

        self.heading("authz_migration demo")
        self.say(f"flag {flag_name()}, AUTHZ_MIGRATION_AUTOMATIC = {self.automatic()},")
        self.say("global flag off: every course starts in the legacy table.")
        self.step("Seeded legacy roles (authz_migration.CourseAccessRole)")
        self.show_legacy()
        self.step("Effective flag per course")
        self.show_flags()

        self.step(f"Course override: force ON {INTRO}")
        self.save_override(CourseFlagOverride(course_id=INTRO), "on", admin)
        self.step(f"Course override: force OFF {CS102} (pins it before the org moves)")
        self.save_override(CourseFlagOverride(course_id=CS102), "off", admin)
        self.step("Org override: force ON OpenedX")
        self.save_override(OrgFlagOverride(org="OpenedX"), "on", admin)

        self.step("Where the roles are now")
        self.show_state()
        self.step("Org override: force OFF OpenedX (roll the org back)")
        self.save_override(OrgFlagOverride(org="OpenedX"), "off", admin)
        self.show_state()
        self.step("Migration runs (authz_migration.MigrationRun)")
        self.show_runs()
        self.admin_hint(admin)

    # --- data -------------------------------------------------------------------------------

    def has_data(self) -> bool:
        return any(
            model.objects.exists()
            for model in (CourseAccessRole, CasbinRule, MigrationRun, CourseFlagOverride)
        )

    @transaction.atomic
    def reset(self):
        """Wipe every table the scenario writes (the demo database holds nothing else worth
        keeping; the ``admin`` account survives) and restart their ids, so that every replay
        prints the same run numbers."""
        models = [MigrationRun, CourseFlagOverride, OrgFlagOverride, CasbinRule, CourseAccessRole]
        tables = [model._meta.db_table for model in models]
        with connection.cursor() as cursor:
            for sql in connection.ops.sql_flush(no_style(), tables, reset_sequences=True):
                cursor.execute(sql)
        get_user_model().objects.filter(username__in=USERS).delete()
        get_waffle_flag_model().objects.filter(name=flag_name()).delete()

    @transaction.atomic
    def seed(self):
        User = get_user_model()
        users = {name: User.objects.get_or_create(username=name)[0] for name in USERS}
        for user, role, org, course_id in LEGACY_ROLES:
            CourseAccessRole.objects.get_or_create(
                user=users[user], role=role, org=org, course_id=course_id
            )
        # The global flag, explicitly off, so that it can be found and flipped in the admin.
        get_waffle_flag_model().objects.get_or_create(
            name=flag_name(), defaults={"everyone": False}
        )

    def ensure_admin(self):
        """A superuser ``admin`` with password ``admin``: for this local demo only."""
        User = get_user_model()
        admin = User.objects.filter(username="admin").first()
        if admin is None:
            return User.objects.create_superuser("admin", "admin@example.com", "admin")
        admin.is_staff = admin.is_superuser = True
        admin.set_password("admin")
        admin.save()
        return admin

    def automatic(self) -> bool:
        return getattr(settings, "AUTHZ_MIGRATION_AUTOMATIC", False)

    # --- one override save and what it did ---------------------------------------------------

    def save_override(self, override, choice: str, admin):
        """Save an override as the admin does, then report the receiver's result."""
        override.waffle_flag = flag_name()
        override.override_choice = choice
        override.enabled = True
        override.changed_by = admin
        override.note = "demo: force " + choice
        override.save()
        self.report(getattr(override, RESULT_ATTRIBUTE, None))

    def report(self, result):
        if result is None:
            self.say("no result: automatic moves are off for this flag", style=self.style.WARNING)
            return
        if result.transition is not None:
            before, after = result.transition.before, result.transition.after
            self.say(
                f"effective flag: {'on' if before.enabled else 'off'} ({before.source})"
                f" -> {'on' if after.enabled else 'off'} ({after.source})"
            )
        outcome = result.outcome
        if outcome is None:
            self.say(f"nothing moved: {result.reason}", style=self.style.WARNING)
            return
        meta, counts = outcome.metadata, outcome.counts
        run = f"run #{outcome.run.pk}" if outcome.run else "unrecorded run"
        style = self.style.SUCCESS if outcome.status == "completed" else self.style.WARNING
        self.say(f"{run}: {outcome.move.describe()} -> {outcome.status}", style=style)
        self.say(
            f"moved {counts.get('moved', 0)}, already in target "
            f"{counts.get('already_present', 0)}, excluded {counts.get('excluded', 0)}, "
            f"could not move {counts.get('could_not_move', 0)}"
        )
        for role, n in meta.get("not_migrated_by_role", {}).items():
            self.say(f"left in place (not a course-authoring role): {role} x{n}")
        for reason in meta.get("could_not_move", {}).values():
            scopes = ", ".join(str(row.get("scope")) for row in reason["rows"])
            self.say(f"could not move: {reason['description']}: {scopes}")
        excluded = meta.get("excluded_courses", {}).get("items", [])
        if excluded:
            self.say(f"excluded (pinned by a course override): {', '.join(excluded)}")
        split = meta.get("org_wide_roles_split")
        if split:
            self.say(f"org-wide roles split: {', '.join(split['items'])}: {split['note']}")

    # --- printing ----------------------------------------------------------------------------

    def say(self, text: str = "", indent: int = 2, style=None):
        """Print ``text`` wrapped to 100 columns, continuation lines indented under it."""
        pad = " " * indent
        for line in textwrap.wrap(text, 100, initial_indent=pad, subsequent_indent=pad + "    "):
            self.stdout.write(style(line) if style else line)

    def heading(self, text: str):
        self.stdout.write("\n" + self.style.MIGRATE_HEADING(f"== {text} " + "=" * (70 - len(text))))

    def step(self, text: str):
        self.step_no += 1
        self.stdout.write("\n" + self.style.MIGRATE_HEADING(f"{self.step_no}. {text}"))

    def show_legacy(self):
        rows = CourseAccessRole.objects.select_related("user").order_by("org", "course_id", "id")
        self.say(f"Legacy rows ({rows.count()}):")
        self.stdout.write(
            table(
                ["user", "role", "org", "course_id"],
                [[r.user.username, r.role, r.org, r.course_id or "(org-wide)"] for r in rows],
                4,
            )
        )

    def show_casbin(self):
        rows = CasbinRule.objects.order_by("v2", "v0", "id")
        self.say(f"Casbin rows ({rows.count()}):")
        self.stdout.write(
            table(["ptype", "v0", "v1", "v2"], [[r.ptype, r.v0, r.v1, r.v2] for r in rows], 4)
        )

    def show_flags(self):
        rows = []
        for course in COURSES:
            state = effective_state(course)
            rows.append([course, system(state.enabled), state.source])
        self.stdout.write(table(["course", "flag", "decided by"], rows, 4))

    def show_state(self):
        self.show_casbin()
        self.show_legacy()
        self.say("Effective flags:")
        self.show_flags()

    def show_runs(self):
        rows = [
            [
                f"#{run.pk}",
                run.status,
                run.migration_type,
                f"{run.scope_type} {run.scope_key}".strip(),
                run.trigger,
                run.metadata.get("counts", {}).get("moved", "-"),
                run.metadata.get("counts", {}).get("could_not_move", "-"),
            ]
            for run in MigrationRun.objects.order_by("id")
        ]
        headers = ["id", "status", "type", "scope", "trigger", "moved", "could not move"]
        self.stdout.write(table(headers, rows))

    def admin_hint(self, admin):
        self.heading("Explore in the admin")
        self.say(f"superuser {admin.username!r}, password 'admin' (a demo-only account)")
        self.say(f"  {interpreter()} example/manage.py runserver")
        self.say("  then open http://127.0.0.1:8000/admin/ and log in as admin / admin")
        self.say("Override saves there move roles the same way; runs are under Migration runs.")
