"""authz_migrate: move, check and inspect role data between the legacy table and Casbin.

Exit codes:
  0  done: everything selected moved, or nothing needed to
  1  a move failed (its changes were rolled back; see the failed run)
  2  bad arguments (unknown subcommand or option, malformed course key or org)
  3  refused: the move contradicts the effective flag (use --force), or confirmation declined
  4  incomplete: rows could not move (partial_success) or a scope was busy (skipped); re-run
  5  verify: rows sit in the wrong system
  130 interrupted (Ctrl-C) after finishing the current batch; re-run to continue
"""

from __future__ import annotations

import json
import signal
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError, CommandParser

from authz_migration import api
from authz_migration.enforcer import watcher_only
from authz_migration.models import MigrationRun
from authz_migration.reporting import Progress, Summary
from authz_migration.roles import InvalidCourseKey, InvalidOrg

EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_INCOMPLETE, EXIT_DRIFT = 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130


class _Parser(CommandParser):
    """Argument errors are exit code 2 through ``call_command`` too (Django's default is 1,
    which this command reserves for failed moves)."""

    def error(self, message):
        if self.called_from_command_line:
            super().error(message)
        raise CommandError(f"Error: {message}", returncode=EXIT_USAGE)


class Command(BaseCommand):
    help = __doc__

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = _Parser
        return parser

    def add_arguments(self, parser):
        actions = parser.add_subparsers(
            dest="action", required=True, metavar="ACTION", parser_class=_Parser
        )
        for name, text in (
            ("sync", "move every selected scope's roles to the system its effective flag names"),
            ("forward", "move selected roles to Casbin (refused against the flag unless --force)"),
            ("rollback", "move selected roles to the legacy table (same refusal)"),
            ("verify", "list scopes whose roles sit in the wrong system (exit 5 if any)"),
        ):
            sub = actions.add_parser(name, help=text, description=text)
            self._add_selectors(sub)
            if name != "verify":
                self._add_move_options(sub, directed=name != "sync")
            sub.add_argument("--json", action="store_true", help="print one JSON document")
        status = actions.add_parser("status", help="recent runs")
        status.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
        status.add_argument("--status", choices=MigrationRun.Status.values, help="only this status")
        status.add_argument("--scope", help="only runs of this course key or org")
        status.add_argument("--json", action="store_true", help="print one JSON document")

    @staticmethod
    def _add_selectors(sub):
        sub.add_argument(
            "--course",
            nargs="+",
            action="extend",
            default=[],
            metavar="KEY",
            help="course keys (course-v1:ORG+COURSE+RUN)",
        )
        sub.add_argument(
            "--org",
            nargs="+",
            action="extend",
            default=[],
            metavar="ORG",
            help="orgs: all their courses and org-wide roles",
        )
        sub.add_argument("--all", action="store_true", dest="everything", help="the whole instance")

    @staticmethod
    def _add_move_options(sub, directed):
        sub.add_argument(
            "--dry-run", action="store_true", help="report what would move; write nothing"
        )
        sub.add_argument(
            "--batch-size",
            type=int,
            default=None,
            metavar="N",
            help="rows per batch, each batch its own transaction and run",
        )
        sub.add_argument(
            "--sleep",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="pause between batches, to spare a live database",
        )
        sub.add_argument(
            "--no-input",
            action="store_false",
            dest="interactive",
            help="never ask for confirmation",
        )
        if directed:
            sub.add_argument(
                "--force",
                action="store_true",
                help="move even against the effective flag (superuser decision)",
            )

    def handle(self, *args, **options):
        action = options["action"]
        if action == "status":
            return self._status(options)
        courses, orgs, everything = options["course"], options["org"], options["everything"]
        if everything == bool(courses or orgs):
            raise CommandError(
                "select --course, --org, or --all (not --all with others)", returncode=EXIT_USAGE
            )
        try:
            if action == "verify":
                return self._verify(courses, orgs, everything, options)
            moves = api.plan(
                action,
                courses=courses,
                orgs=orgs,
                everything=everything,
                force=options.get("force", False),
            )
        except (InvalidCourseKey, InvalidOrg) as exc:
            raise CommandError(str(exc), returncode=EXIT_USAGE) from exc
        except api.FlagContradiction as exc:
            raise CommandError(str(exc), returncode=EXIT_REFUSED) from exc
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1", returncode=EXIT_USAGE)
        if options["sleep"] < 0:
            raise CommandError("--sleep cannot be negative", returncode=EXIT_USAGE)
        if action != "sync" and not options["dry_run"] and options["interactive"]:
            # With --json, stdout carries one document only: ask on stderr.
            self._confirm(
                action,
                moves,
                options.get("force", False),
                self.stderr if options["json"] else self.stdout,
            )
        return self._move(action, moves, options)

    def _confirm(self, action, moves, force, out):
        scopes = ", ".join(m.scope_key or "the whole instance" for m in moves)
        warning = " AGAINST the effective flag" if force else ""
        out.write(f"This will {action} the roles of {scopes}{warning}.")
        out.write("Type 'yes' to continue: ", ending="")
        out.flush()
        try:
            answer = input()
        except EOFError:
            answer = ""
        if answer.strip().lower() != "yes":
            raise CommandError("cancelled; nothing moved", returncode=EXIT_REFUSED)

    def _move(self, action, moves, options):
        summary = Summary()
        as_json = options["json"]
        progress = Progress(
            self.stderr if as_json else self.stdout,
            api.source_rows(moves),
            tty=self.stdout.isatty(),
        )
        stop = _StopFlag()
        with stop.installed(), watcher_only():
            for outcome in api.run_in_batches(
                moves,
                trigger=MigrationRun.Trigger.COMMAND,
                batch_size=options["batch_size"],
                dry_run=options["dry_run"],
                pause=options["sleep"],
                should_stop=stop,
            ):
                summary.add(outcome)
                progress.update(summary)
        progress.finish()
        code = self._exit_code(summary, stop.requested)
        if as_json:
            self.stdout.write(
                json.dumps(
                    {
                        "action": action,
                        "dry_run": options["dry_run"],
                        "exit_code": code,
                        "interrupted": stop.requested,
                        "moved": summary.moved,
                        "statuses": dict(summary.statuses),
                        "scopes": summary.rows(),
                        "errors": summary.errors,
                    },
                    indent=2,
                )
            )
        else:
            for line in summary.lines():
                self.stdout.write(line)
            verb = "Would move" if options["dry_run"] else "Moved"
            self.stdout.write(f"{verb} {summary.moved} role rows.")
            for error in summary.errors:
                self.stderr.write(error)
        if stop.requested:
            raise CommandError(
                "interrupted after the current batch; run the same command again to continue",
                returncode=EXIT_INTERRUPTED,
            )
        if code:
            raise CommandError(_EXIT_TEXT[code], returncode=code)

    @staticmethod
    def _exit_code(summary, interrupted):
        if interrupted:
            return EXIT_INTERRUPTED
        if summary.statuses[MigrationRun.Status.FAILED]:
            return EXIT_FAILED
        if (
            summary.statuses[MigrationRun.Status.SKIPPED]
            or summary.statuses[MigrationRun.Status.PARTIAL_SUCCESS]
        ):
            return EXIT_INCOMPLETE
        return 0

    def _verify(self, courses, orgs, everything, options):
        drift = api.verify_scope(courses=courses, orgs=orgs, everything=everything)
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "drift": [
                            {
                                "scope": p.scope,
                                "org": p.org,
                                "course": p.course,
                                "flag": "casbin" if p.authz_enabled else "legacy",
                                "legacy_rows": p.legacy_rows,
                                "casbin_rows": p.casbin_rows,
                            }
                            for p in drift
                        ]
                    },
                    indent=2,
                )
            )
        elif drift:
            self.stdout.write(f"{len(drift)} scope(s) with roles in the wrong system:")
            for p in drift:
                where = "Casbin" if p.authz_enabled else "legacy"
                self.stdout.write(
                    f"  {p.scope}: flag says {where}; {p.legacy_rows} legacy "
                    f"row(s), {p.casbin_rows} Casbin row(s)"
                )
        else:
            self.stdout.write("Every selected scope is in step with its flag.")
        if drift:
            raise CommandError(
                "drift found; `authz_migrate sync` moves these roles", returncode=EXIT_DRIFT
            )

    def _status(self, options):
        runs = MigrationRun.objects.select_related("triggered_by").order_by("-created_at", "-id")
        if options["status"]:
            runs = runs.filter(status=options["status"])
        if options["scope"]:
            runs = runs.filter(scope_key=options["scope"])
        runs = list(runs[: max(options["limit"], 0)])
        records = [
            {
                "id": r.pk,
                "created_at": r.created_at.isoformat(),
                "status": r.status,
                "migration_type": r.migration_type,
                "scope_type": r.scope_type,
                "scope_key": r.scope_key,
                "trigger": r.trigger,
                "triggered_by": r.triggered_by.get_username() if r.triggered_by else None,
                "moved": r.metadata.get("counts", {}).get("moved", 0),
                "could_not_move": r.metadata.get("counts", {}).get("could_not_move", 0),
                "duration_seconds": r.metadata.get("duration_seconds"),
            }
            for r in runs
        ]
        if options["json"]:
            self.stdout.write(json.dumps({"runs": records}, indent=2))
            return
        if not records:
            self.stdout.write("No runs.")
            return
        for r in records:
            who = r["triggered_by"] or "-"
            self.stdout.write(
                f"#{r['id']:<6} {r['created_at'][:19]}  {r['status']:<15} {r['migration_type']:<8} "
                f"{r['scope_type']:<8} {r['scope_key'] or '(instance)':<40} {r['trigger']:<7} "
                f"{who:<12} moved {r['moved']}, could not move {r['could_not_move']}"
            )


_EXIT_TEXT = {
    EXIT_FAILED: "a move failed and was rolled back; see the failed run (authz_migrate status)",
    EXIT_INCOMPLETE: "incomplete: some rows could not move or a scope was busy; see the runs",
}


class _StopFlag:
    """Ctrl-C sets a flag; the current batch finishes and no new one starts."""

    def __init__(self):
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame):
        self.requested = True

    @contextmanager
    def installed(self):
        try:
            previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread (call_command from a thread): no handler
            previous = None
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
