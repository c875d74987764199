"""The floor of an org move beside openedx-authz: the benchmark's set-based move
(:meth:`benchmarks.sql.Sql.floor_forward` / ``floor_rollback``) plus the side rows that
openedx-authz's assignment API writes and removes, written set based, as the app writes them
(``authz_migration/peer.py``): forward, a ``Subject``/``UserSubject`` for each user and a
``Scope``/``CourseScope`` for each course that lacks one, an ``ExtendedCasbinRule`` per rule
and a ``created`` audit row per rule; back, a ``deleted`` audit row per rule and the extended
rules removed before their rules. Like the plain floor it checks and records nothing.

The parent rows of openedx-authz's multi-table models (``Subject``, ``Scope``) need ids that
the child rows then name. PostgreSQL draws them from the parent's sequence in the one
statement that writes both (a CTE read twice is computed once); SQLite and MariaDB number
them after the parent's highest id in a temporary table, then write parents and children
from it."""

from __future__ import annotations

import hashlib

from benchmarks.sql import Sql


class SideFloor:
    """The side tables' SQL for one org, beside a :class:`~benchmarks.sql.Sql`."""

    def __init__(self, sql: Sql):
        from django.apps import apps

        self.sql = sql
        q = sql.q

        def table(name: str) -> str:
            return q(apps.get_model("openedx_authz", name)._meta.db_table)

        self.subject, self.user_subject = table("Subject"), table("UserSubject")
        self.scope, self.course_scope = table("Scope"), table("CourseScope")
        self.extended, self.audit = table("ExtendedCasbinRule"), table("RoleAssignmentAudit")
        self.side_tables = [self.extended, self.audit, self.user_subject, self.subject]
        self.side_tables += [self.course_scope, self.scope]

    def reset(self) -> None:
        """Empty openedx-authz's side tables too (``Sql.reset`` knows only the app's)."""
        self.sql.empty(self.side_tables)
        self.sql.reset()

    @staticmethod
    def _rules(org: str, alias: str = "c") -> str:
        return f"{alias}.ptype = 'g' AND {alias}.v2 LIKE 'course-v1^course-v1:{org}+%'"

    def _legacy(self, org: str) -> str:
        from authz_migration.roles import role_map

        roles = ", ".join(f"'{k}'" for k in role_map())
        return f"r.course_id LIKE 'course-v1:{org}+%' AND r.role IN ({roles})"

    def _with_ids(self, keys: str, parent: tuple[str, str, str], child: tuple[str, str, str]):
        """Statements that give each row of ``keys`` (a query of one column ``k``) a new id
        ``pid`` of the parent table, then write the parent rows and the child rows, each
        given as (table, columns, values over ``k`` and ``pid``)."""
        if self.sql.vendor == "postgresql":
            sequence = f"pg_get_serial_sequence('{parent[0].strip(chr(34))}', 'id')"
            return [
                f"WITH need AS (SELECT k, nextval({sequence}) AS pid FROM ({keys}) t), "
                f"parents AS (INSERT INTO {parent[0]} ({parent[1]}) SELECT {parent[2]} FROM need) "
                f"INSERT INTO {child[0]} ({child[1]}) SELECT {child[2]} FROM need"
            ]
        need = self.sql.q("authz_bench_need")
        temporary = "TEMPORARY" if self.sql.vendor == "mysql" else "TEMP"
        return [
            f"CREATE {temporary} TABLE {need} AS SELECT k, "
            f"(SELECT COALESCE(MAX(id), 0) FROM {parent[0]}) + ROW_NUMBER() OVER (ORDER BY k) "
            f"AS pid FROM ({keys}) t",
            f"INSERT INTO {parent[0]} ({parent[1]}) SELECT {parent[2]} FROM {need}",
            f"INSERT INTO {child[0]} ({child[1]}) SELECT {child[2]} FROM {need}",
            # MariaDB: only DROP TEMPORARY TABLE leaves the transaction open; SQLite has no
            # such form (its temporary table hides any other of that name).
            f"DROP {'TEMPORARY ' if self.sql.vendor == 'mysql' else ''}TABLE {need}",
        ]

    def forward(self, org: str) -> list[str]:
        insert_rules, delete_legacy = self.sql.floor_forward(org)
        legacy = self.sql.legacy
        subjects = self._with_ids(
            f"SELECT DISTINCT r.user_id AS k FROM {legacy} r WHERE {self._legacy(org)} "
            f"AND NOT EXISTS (SELECT 1 FROM {self.user_subject} us WHERE us.user_id = r.user_id)",
            (self.subject, "id", "pid"),
            (self.user_subject, "subject_ptr_id, user_id", "pid, k"),
        )
        # No course overview exists in the benchmark: every scope is unlinked, as the app
        # writes it then.
        scopes = self._with_ids(
            f"SELECT DISTINCT r.course_id AS k FROM {legacy} r WHERE {self._legacy(org)} "
            f"AND NOT EXISTS (SELECT 1 FROM {self.scope} s WHERE s.external_key = r.course_id)",
            (self.scope, "id, external_key", "pid, k"),
            (self.course_scope, "scope_ptr_id, course_overview_id", "pid, NULL"),
        )
        key = self.sql.concat("'g,'", "c.v0", "','", "c.v1", "','", "c.v2", "','")
        extended = (
            f"INSERT INTO {self.extended} (casbin_rule_key, casbin_rule_id, created_at, "
            f"updated_at, scope_id, subject_id) "
            f"SELECT {key}, c.id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
            f"s.id, us.subject_ptr_id FROM {self.sql.casbin} c "
            f"JOIN {self.scope} s ON s.external_key = SUBSTR(c.v2, 11) "
            f"JOIN {self.sql.users} u ON u.username = SUBSTR(c.v0, 6) "
            f"JOIN {self.user_subject} us ON us.user_id = u.id WHERE {self._rules(org)} "
            f"AND NOT EXISTS (SELECT 1 FROM {self.extended} e WHERE e.casbin_rule_id = c.id)"
        )
        audit = self._audit("created", org)
        return [insert_rules, *subjects, *scopes, extended, audit, delete_legacy]

    def rollback(self, org: str) -> list[str]:
        insert_legacy, delete_rules = self.sql.floor_rollback(org)
        forget = (
            f"DELETE FROM {self.extended} WHERE casbin_rule_id IN "
            f"(SELECT c.id FROM {self.sql.casbin} c WHERE {self._rules(org)})"
        )
        return [insert_legacy, self._audit("deleted", org), forget, delete_rules]

    def _audit(self, operation: str, org: str) -> str:
        return (
            f"INSERT INTO {self.audit} (operation, subject, role, scope, actor_id, "
            f"{self.sql.q('timestamp')}) SELECT '{operation}', c.v0, c.v1, c.v2, NULL, "
            f"CURRENT_TIMESTAMP FROM {self.sql.casbin} c "
            f"WHERE {self._rules(org)}"
        )

    def fingerprint(self, org: str) -> str:
        """A digest of the org's side rows, independent of ids and times: each extended
        rule's key with its subject's user and its scope's key, the audit rows by
        operation, and how many subjects and scopes exist."""
        digest = hashlib.sha256()
        with self.sql.connection.cursor() as cursor:
            cursor.execute(
                f"SELECT e.casbin_rule_key, us.user_id, s.external_key FROM {self.extended} e "
                f"JOIN {self.sql.casbin} c ON c.id = e.casbin_rule_id "
                f"LEFT JOIN {self.user_subject} us ON us.subject_ptr_id = e.subject_id "
                f"LEFT JOIN {self.scope} s ON s.id = e.scope_id WHERE {self._rules(org)}"
            )
            digest.update(repr(sorted(cursor.fetchall())).encode())
            cursor.execute(
                f"SELECT operation, subject, role, scope, COUNT(*) FROM {self.audit} "
                f"WHERE scope LIKE 'course-v1^course-v1:{org}+%' "
                f"GROUP BY operation, subject, role, scope"
            )
            digest.update(repr(sorted(cursor.fetchall())).encode())
            for table in (self.user_subject, self.course_scope):
                cursor.execute(f"SELECT COUNT(*) FROM {table}")
                digest.update(repr(cursor.fetchone()).encode())
        return digest.hexdigest()[:12]

    def extended_rows(self, org: str) -> int:
        return self.sql.scalar(
            f"SELECT COUNT(*) FROM {self.extended} e JOIN {self.sql.casbin} c "
            f"ON c.id = e.casbin_rule_id WHERE {self._rules(org)}"
        )
