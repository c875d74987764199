"""The raw SQL of the benchmark, per database vendor: seeding, the floor, checks."""

from __future__ import annotations

import hashlib

from benchmarks.fixtures import ROLES


class Sql:
    """Vendor differences of the raw SQL used for seeding and for the floor."""

    def __init__(self):
        from django.contrib.auth import get_user_model
        from django.db import connection

        from authz_migration.conf import (
            course_override_model,
            legacy_role_model,
            org_override_model,
        )
        from authz_migration.models import MigrationRun

        self.connection = connection
        self.vendor = connection.vendor
        q = connection.ops.quote_name
        self.q = q
        self.legacy = q(legacy_role_model()._meta.db_table)
        self.users = q(get_user_model()._meta.db_table)
        self.casbin = q("casbin_rule")
        self.run_table = q(MigrationRun._meta.db_table)
        user_model = get_user_model()
        # Every table the benchmark writes, children before parents.
        self.reset_tables = [
            "casbin_rule",
            legacy_role_model()._meta.db_table,
            course_override_model()._meta.db_table,
            org_override_model()._meta.db_table,
            MigrationRun._meta.db_table,
            user_model.groups.through._meta.db_table,
            user_model.user_permissions.through._meta.db_table,
        ]
        from waffle import get_waffle_flag_model

        flag_model = get_waffle_flag_model()
        for field in flag_model._meta.many_to_many:
            self.reset_tables.append(field.remote_field.through._meta.db_table)
        self.reset_tables += [flag_model._meta.db_table, user_model._meta.db_table]

    # expressions
    def concat(self, *parts: str) -> str:
        if self.vendor == "mysql":
            return f"CONCAT({', '.join(parts)})"
        return "(" + " || ".join(parts) + ")"

    def idiv(self, a: str, b: str) -> str:
        return f"({a} DIV {b})" if self.vendor == "mysql" else f"({a} / {b})"

    def numbers(self, count: int) -> str:
        """A FROM item ``n`` with one integer column ``i`` = 0 .. count-1."""
        if self.vendor == "postgresql":
            return f"generate_series(0, {count - 1}) AS n(i)"
        if self.vendor == "mysql":
            # MariaDB's SEQUENCE engine; seq_0_to_-1 would be an error, callers skip count 0.
            return f"(SELECT seq AS i FROM seq_0_to_{count - 1}) AS n"
        return (
            f"(WITH RECURSIVE nums(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM nums "
            f"WHERE i < {count - 1}) SELECT i FROM nums) AS n"
        )

    def role_case(self, value: str) -> str:
        whens = " ".join(f"WHEN {k} THEN '{role}'" for k, role in enumerate(ROLES))
        return f"CASE {value} {whens} END"

    # statements
    def execute(self, *statements: str) -> None:
        with self.connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)

    def scalar(self, sql: str):
        with self.connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0]

    def reset(self) -> None:
        """Empty every table the benchmark fills (fresh tables, identities restarted)."""
        self.empty([self.q(t) for t in self.reset_tables])
        if self.vendor == "sqlite":
            if self.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_sequence'"):
                self.execute("DELETE FROM sqlite_sequence")

    def empty(self, tables: list[str]) -> None:
        """Empty ``tables`` (quoted names, children before parents); on PostgreSQL and
        MariaDB their identities restart (SQLite's sequences: :meth:`reset`)."""
        if self.vendor == "postgresql":
            self.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        elif self.vendor == "mysql":
            self.execute(
                "SET FOREIGN_KEY_CHECKS = 0",
                *[f"TRUNCATE TABLE {t}" for t in tables],
                "SET FOREIGN_KEY_CHECKS = 1",
            )
        else:
            self.execute(*[f"DELETE FROM {t}" for t in tables])

    def analyze(self) -> None:
        """Fresh planner statistics, as a live site would have (never timed)."""
        tables = [self.casbin, self.legacy, self.users]
        if self.vendor == "postgresql":
            self.execute(*[f"ANALYZE {t}" for t in tables])
        elif self.vendor == "mysql":
            self.execute(f"ANALYZE TABLE {', '.join(tables)}")
        else:
            self.execute("ANALYZE")

    def seed_users(self, count: int) -> None:
        """Users with ids 1..count and usernames bench_u<id>."""
        if count <= 0:
            return
        false, true = ("0", "1") if self.vendor == "sqlite" else ("FALSE", "TRUE")
        username = self.concat("'bench_u'", "(n.i + 1)")
        self.execute(
            f"INSERT INTO {self.users} (id, password, last_login, is_superuser, username, "
            "first_name, last_name, email, is_staff, is_active, date_joined) "
            f"SELECT n.i + 1, '', NULL, {false}, {username}, '', '', '', "
            f"{false}, {true}, CURRENT_TIMESTAMP FROM {self.numbers(count)}"
        )
        if self.vendor == "postgresql":
            self.execute(
                f"SELECT setval(pg_get_serial_sequence('{self.users.strip(chr(34))}', 'id'), "
                f"(SELECT MAX(id) FROM {self.users}))"
            )

    def seed_legacy(self, rows: int, users: int, per_course: int, orgs: int, org_name) -> None:
        """``rows`` legacy rows: ``per_course`` rows per course (roles cycling through
        ROLES), courses spread round-robin over ``orgs`` orgs named by ``org_name(expr)``."""
        if rows <= 0:
            return
        course = self.idiv("n.i", str(per_course))
        org = org_name(f"({course} % {orgs})") if orgs > 1 else org_name(None)
        course_id = self.concat("'course-v1:'", org, "'+C'", course, "'+R2024'")
        # A course's rows go to consecutive users: distinct within the course as long as
        # users >= per_course.
        self.execute(
            f"INSERT INTO {self.legacy} (user_id, org, course_id, role) "
            f"SELECT 1 + (n.i % {users}), {org}, {course_id}, {self.role_case('n.i % 5')} "
            f"FROM {self.numbers(rows)}"
        )

    def seed_casbin_unrelated(self, rows: int, orgs: int = 200) -> None:
        """Course role rows of other orgs, in the format the app writes."""
        if rows <= 0:
            return
        course = self.idiv("n.i", "5")
        casbin_roles = " ".join(
            f"WHEN {k} THEN 'role^{role}'"
            for k, role in enumerate(
                [
                    "course_admin",
                    "course_staff",
                    "course_limited_staff",
                    "course_data_researcher",
                    "course_beta_tester",
                ]
            )
        )
        v2 = self.concat(
            "'course-v1^course-v1:CasOrg'", f"({course} % {orgs})", "'+C'", course, "'+R2024'"
        )
        subject = self.concat("'user^other_u'", "(n.i % 50000)")
        self.execute(
            f"INSERT INTO {self.casbin} (ptype, v0, v1, v2, v3, v4, v5) "
            f"SELECT 'g', {subject}, "
            f"CASE n.i % 5 {casbin_roles} END, {v2}, '', '', '' FROM {self.numbers(rows)}"
        )

    # the floor: one INSERT ... SELECT and one DELETE, in one transaction
    def floor_forward(self, org: str) -> list[str]:
        from authz_migration.roles import role_map

        mapping = role_map()
        case = (
            "CASE r.role " + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in mapping.items()) + " END"
        )
        roles = ", ".join(f"'{k}'" for k in mapping)
        where = f"r.course_id LIKE 'course-v1:{org}+%' AND r.role IN ({roles})"
        subject = self.concat("'user^'", "u.username")
        role = self.concat("'role^'", case)
        scope = self.concat("'course-v1^'", "r.course_id")
        return [
            f"INSERT INTO {self.casbin} (ptype, v0, v1, v2, v3, v4, v5) "
            f"SELECT 'g', {subject}, {role}, {scope}, '', '', '' "
            f"FROM {self.legacy} r JOIN {self.users} u ON u.id = r.user_id WHERE {where}",
            f"DELETE FROM {self.legacy} WHERE {where.replace('r.', '')}",
        ]

    def floor_rollback(self, org: str) -> list[str]:
        from authz_migration.roles import reverse_role_map

        back = reverse_role_map()
        case = (
            "CASE c.v1 " + " ".join(f"WHEN 'role^{k}' THEN '{v}'" for k, v in back.items()) + " END"
        )
        roles = ", ".join(f"'role^{k}'" for k in back)
        where = (
            f"c.ptype = 'g' AND c.v2 LIKE 'course-v1^course-v1:{org}+%' AND c.v1 IN ({roles}) "
            "AND c.v3 = '' AND c.v4 = '' AND c.v5 = ''"
        )
        return [
            f"INSERT INTO {self.legacy} (user_id, org, course_id, role) "
            f"SELECT u.id, '{org}', SUBSTR(c.v2, 11), {case} "
            f"FROM {self.casbin} c JOIN {self.users} u ON u.username = SUBSTR(c.v0, 6) "
            f"WHERE {where}",
            f"DELETE FROM {self.casbin} WHERE {where.replace('c.', '')}",
        ]

    # checks
    def org_counts(self, org: str) -> tuple[int, int]:
        legacy = self.scalar(
            f"SELECT COUNT(*) FROM {self.legacy} WHERE course_id LIKE 'course-v1:{org}+%'"
        )
        casbin = self.scalar(
            f"SELECT COUNT(*) FROM {self.casbin} WHERE v2 LIKE 'course-v1^course-v1:{org}+%'"
        )
        return legacy, casbin

    def fingerprint(self, org: str) -> str:
        """A digest of the org's role data in both stores, independent of row ids."""
        digest = hashlib.sha256()
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"SELECT u.username, r.org, r.course_id, r.role FROM {self.legacy} r "
                f"JOIN {self.users} u ON u.id = r.user_id "
                f"WHERE r.course_id LIKE 'course-v1:{org}+%'"
            )
            digest.update(repr(sorted(cursor.fetchall())).encode())
            cursor.execute(
                f"SELECT ptype, v0, v1, v2, v3, v4, v5 FROM {self.casbin} "
                f"WHERE v2 LIKE 'course-v1^course-v1:{org}+%'"
            )
            digest.update(repr(sorted(cursor.fetchall())).encode())
        return digest.hexdigest()[:12]
