"""authz_migrate: move, check and inspect role data between the legacy table and Casbin.

Exit codes:
  0    done: everything selected moved, or nothing needed to
  1    a move failed (its changes were rolled back; see the failed run)
  2    bad input (unknown subcommand or option, malformed course key or org, a number out
       of range); nothing was read or written
  3    refused: the move contradicts the effective flag (use --force), or not confirmed
  4    incomplete: a scope was busy with another run (skipped); run the same command again
  5    verify: rows sit in the wrong system; sync moves them
  6    rows that belong in the other system cannot move (partial_success; verify lists
       them by reason); no re-run moves them: fix the rows
  130  interrupted (Ctrl-C) after finishing the current batch; re-run to continue
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from contextlib import contextmanager

from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    DjangoHelpFormatter,
)

from authz_migration import api, cutover
from authz_migration.enforcer import watcher_only
from authz_migration.models import MigrationRun, scope_label
from authz_migration.placement import REASONS
from authz_migration.reporting import Progress, Summary, describe_outcome
from authz_migration.roles import InvalidCourseKey, InvalidOrg, normalize_course_key, validate_org

EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_INCOMPLETE, EXIT_DRIFT, EXIT_STUCK = 1, 2, 3, 4, 5, 6
EXIT_INTERRUPTED = 130
CUTOVER_TARGETS = ("authz", "legacy")

# Upper bounds of the numeric options: beyond them a value is a typo, not a plan (a batch is
# one transaction on a live database; a pause of more than an hour is a stalled command).
MAX_BATCH_SIZE = 100_000
MAX_LIMIT = 10_000
MAX_SLEEP = 3600
# A selected key ends up in the run's scope_key: longer keys could not be recorded.
MAX_KEY_LENGTH = MigrationRun._meta.get_field("scope_key").max_length


class _HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's option order, and descriptions printed as written (the exit-code list)."""


class _Parser(CommandParser):
    """Argument errors are exit code 2 and one line, from the command line and through
    ``call_command`` alike (Django's default is 1, which this command reserves for failed
    moves, and argparse's is the usage block then the error)."""

    def error(self, message):
        if self.called_from_command_line:
            self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")
        raise CommandError(message, returncode=EXIT_USAGE)


# --- option values: checked by argparse, and again in handle() for call_command's keywords --


def _whole_number(maximum: int):
    def parse(value) -> int:
        if isinstance(value, bool):
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number")
        try:
            number = value if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if not 1 <= number <= maximum:
            raise argparse.ArgumentTypeError(f"{number} is out of range: use 1 to {maximum}")
        return number

    parse.__name__ = "whole number"
    return parse


def _seconds(value) -> float:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number of seconds")
    if not 0 <= number <= MAX_SLEEP:
        raise argparse.ArgumentTypeError(f"{value!r} is out of range: use 0 to {MAX_SLEEP} seconds")
    return number


_batch_size = _whole_number(MAX_BATCH_SIZE)
_limit = _whole_number(MAX_LIMIT)
# (dest, option, check) of every numeric option.
_NUMBERS = (("batch_size", "--batch-size", _batch_size), ("sleep", "--sleep", _seconds))
_STATUS_NUMBERS = (("limit", "--limit", _limit),)


def _usage(message: str) -> CommandError:
    return CommandError(message, returncode=EXIT_USAGE)


def _check_numbers(options, numbers) -> None:
    for dest, option, check in numbers:
        if options.get(dest) is not None:
            try:
                options[dest] = check(options[dest])
            except argparse.ArgumentTypeError as exc:
                raise _usage(f"argument {option}: {exc}") from None


def _check_length(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH:
        raise _usage(f"{key[:40]!r}... is longer than {MAX_KEY_LENGTH} characters")
    return key


def _checked_scopes(courses, orgs) -> tuple[list[str], list[str]]:
    """The selected keys, validated without touching the database, each once."""
    try:
        courses = [_check_length(normalize_course_key(c)) for c in courses]
        orgs = [_check_length(validate_org(o)) for o in orgs]
    except (InvalidCourseKey, InvalidOrg) as exc:
        raise _usage(str(exc)) from None
    return list(dict.fromkeys(courses)), list(dict.fromkeys(orgs))


def _status_scope(value: str) -> str:
    try:
        return _check_length(normalize_course_key(value))
    except InvalidCourseKey:
        pass
    try:
        return _check_length(validate_org(value))
    except InvalidOrg:
        raise _usage(
            f"argument --scope: {value!r} is neither a course key "
            "(course-v1:ORG+COURSE+RUN) nor an org name"
        ) from None


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):  # no stdin, or a closed one
        return False


class Command(BaseCommand):
    help = __doc__

    def create_parser(self, prog_name, subcommand, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = _Parser
        for sub in self._action_parsers:
            sub.called_from_command_line = parser.called_from_command_line
        return parser

    def add_arguments(self, parser):
        actions = parser.add_subparsers(
            dest="action", required=True, metavar="ACTION", parser_class=_Parser
        )
        self._action_parsers = []
        for name, text in (
            ("sync", "move every selected scope's roles to the system its effective flag names"),
            ("forward", "move selected roles to Casbin (refused against the flag unless --force)"),
            ("rollback", "move selected roles to the legacy table (same refusal)"),
            (
                "verify",
                "list scopes whose roles sit in the wrong system (exit 5) and rows that "
                "cannot move (exit 6)",
            ),
            ("status", "list recent runs, newest first (what moved, when, by whom)"),
            (
                "cutover",
                "move the whole instance to one system with no outage: pin every org on its "
                "state, flip the global flag, release the orgs one by one with their roles",
            ),
        ):
            sub = actions.add_parser(
                name, help=text, description=text, formatter_class=_HelpFormatter
            )
            self._action_parsers.append(sub)
            # Also after the subcommand, where an operator adds it; unset unless given, so
            # that `authz_migrate -v 2 sync ...` keeps working too.
            sub.add_argument(
                "-v",
                "--verbosity",
                type=int,
                choices=[0, 1, 2, 3],
                default=argparse.SUPPRESS,
                help="0 errors only, 1 progress and summary (default), 2 also each batch",
            )
            if name == "status":
                self._add_status_options(sub)
                continue
            if name == "cutover":
                self._add_cutover_options(sub)
                continue
            self._add_selectors(sub)
            if name != "verify":
                self._add_move_options(sub, directed=name != "sync")
            sub.add_argument("--json", action="store_true", help="print one JSON document")

    @staticmethod
    def _add_status_options(sub):
        sub.add_argument(
            "--limit",
            type=_limit,
            default=20,
            metavar="N",
            help=f"how many runs, 1 to {MAX_LIMIT} (default 20)",
        )
        sub.add_argument("--status", choices=MigrationRun.Status.values, help="only this status")
        sub.add_argument("--scope", metavar="KEY", help="only runs of this course key or org")
        sub.add_argument("--json", action="store_true", help="print one JSON document")

    @staticmethod
    def _add_cutover_options(sub):
        sub.add_argument(
            "--to",
            required=True,
            choices=CUTOVER_TARGETS,
            help="the system every course follows afterwards: authz (Casbin) or legacy",
        )
        sub.add_argument(
            "--org",
            nargs="+",
            action="extend",
            default=[],
            metavar="ORG",
            help="release only these orgs (every org is still pinned before the global flag "
            "changes); run again without --org to finish",
        )
        sub.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
        sub.add_argument(
            "--sleep",
            type=_seconds,
            default=0.0,
            metavar="SECONDS",
            help=f"pause between two orgs, 0 to {MAX_SLEEP}, to spare a live database",
        )
        sub.add_argument(
            "--no-input",
            action="store_false",
            dest="interactive",
            help="never ask for confirmation",
        )
        sub.add_argument("--json", action="store_true", help="print one JSON document")

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
            help="orgs: all their courses and org-wide roles (exact spelling, case included)",
        )
        sub.add_argument("--all", action="store_true", dest="everything", help="the whole instance")

    @staticmethod
    def _add_move_options(sub, directed):
        sub.add_argument(
            "--dry-run", action="store_true", help="report what would move; write nothing"
        )
        sub.add_argument(
            "--batch-size",
            type=_batch_size,
            default=None,
            metavar="N",
            help=f"rows per batch, 1 to {MAX_BATCH_SIZE}; each batch is its own transaction "
            "and run",
        )
        sub.add_argument(
            "--sleep",
            type=_seconds,
            default=0.0,
            metavar="SECONDS",
            help=f"pause between batches, 0 to {MAX_SLEEP}, to spare a live database",
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

    # --- handle: every check first, then the database ---------------------------------------

    def handle(self, *args, **options):
        try:
            return self._handle(options)
        except KeyboardInterrupt:
            # Ctrl-C before the moves start (while planning, verifying or listing; during
            # the moves a handler lets the current batch finish instead): nothing moved.
            self.stdout.write("")
            raise CommandError(
                "interrupted before anything moved", returncode=EXIT_INTERRUPTED
            ) from None

    def _handle(self, options):
        action = options["action"]
        self.verbosity = options.get("verbosity", 1)
        if action == "status":
            return self._status(_checked_status_options(options))
        if action == "cutover":
            return self._cutover(_checked_cutover_options(options))
        if action != "verify":
            _check_numbers(options, _NUMBERS)
        courses, orgs = _checked_scopes(options["course"], options["org"])
        everything = options["everything"]
        if everything == bool(courses or orgs):
            raise _usage("select --course, --org, or --all (not --all with others)")
        # Nothing above touched the database; from here on, reads.
        self.warnings = api.unknown_scopes(courses, orgs)
        if not options.get("json"):
            for warning in self.warnings:
                self._say(1, f"warning: {warning}", err=True)
        if action == "verify":
            return self._verify(courses, orgs, everything, options)
        moves = self._plan(action, courses, orgs, everything, options)
        if action != "sync" and not options["dry_run"] and options["interactive"]:
            # With --json, stdout carries one document only: ask on stderr.
            self._confirm(
                action,
                moves,
                options.get("force", False),
                self.stderr if options["json"] else self.stdout,
            )
        return self._move(action, moves, options)

    def _plan(self, action, courses, orgs, everything, options):
        force = options.get("force", False)
        try:
            moves = api.plan(action, courses=courses, orgs=orgs, everything=everything, force=force)
        except api.FlagContradiction as exc:
            raise CommandError(
                exc.describe(
                    "`authz_migrate sync` moves roles where their flags point; "
                    "add --force to move them this way anyway"
                ),
                returncode=EXIT_REFUSED,
            ) from None
        if self.verbosity >= 2 and not options["json"]:
            for move in moves:
                self._say(
                    2, f"planned: {move.direction} {scope_label(move.scope_type, move.scope_key)}"
                )
        return moves

    def _say(self, level: int, text: str, err: bool = False) -> None:
        if self.verbosity >= level:
            (self.stderr if err else self.stdout).write(text)

    def _confirm(self, action, moves, force, out):
        scopes = ", ".join(scope_label(m.scope_type, m.scope_key) for m in moves)
        warning = " AGAINST the effective flag" if force else ""
        self._ask(f"This will {action} the roles of {scopes}{warning}.", out)

    def _ask(self, question, out):
        out.write(question)
        out.write("Type 'yes' to continue: ", ending="")
        out.flush()
        try:
            answer = input()
        except EOFError:
            answer = None
        except KeyboardInterrupt:
            answer = ""  # Ctrl-C at the question: a no
        if not _stdin_is_terminal():
            out.write("")  # nobody typed the newline: end the prompt's line
        if answer is None:
            raise CommandError(
                "cancelled: no answer on standard input, so not confirmed; nothing moved; "
                "add --no-input to run without asking",
                returncode=EXIT_REFUSED,
            )
        if answer.strip().lower() != "yes":
            raise CommandError("cancelled: not confirmed; nothing moved", returncode=EXIT_REFUSED)

    def _move(self, action, moves, options):
        summary = Summary()
        as_json, dry_run = options["json"], options["dry_run"]
        progress = None
        if self.verbosity >= 1:
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
                dry_run=dry_run,
                pause=options["sleep"],
                should_stop=stop,
            ):
                summary.add(outcome)
                if progress is not None:
                    progress.update(summary)
                if self.verbosity >= 2 and not as_json:
                    self.stdout.write(describe_outcome(outcome))
        if progress is not None:
            progress.finish()
        code = self._exit_code(summary, stop.requested)
        self._report(action, summary, code, stop.requested, options)
        if stop.requested:
            raise CommandError(
                "interrupted after the current batch; run the same command again to continue",
                returncode=EXIT_INTERRUPTED,
            )
        if code:
            raise CommandError(_exit_text(code, summary, dry_run), returncode=code)

    def _report(self, action, summary, code, interrupted, options) -> None:
        dry_run = options["dry_run"]
        if options["json"]:
            document = {
                "action": action,
                "dry_run": dry_run,
                "exit_code": code,
                "interrupted": interrupted,
                "moved": summary.moved,
                "statuses": dict(summary.statuses),
                "scopes": summary.rows(),
                "errors": summary.errors,
                "warnings": self.warnings,
            }
            self.stdout.write(json.dumps(document, indent=2))
            return
        if self.verbosity >= 1:
            for line in summary.lines():
                self.stdout.write(line)
            verb = "Would move" if dry_run else "Moved"
            self.stdout.write(f"{verb} {summary.moved} role rows.")
        for error in dict.fromkeys(summary.errors):
            self.stderr.write(error)

    @staticmethod
    def _exit_code(summary, interrupted):
        if interrupted:
            return EXIT_INTERRUPTED
        if summary.statuses[MigrationRun.Status.FAILED]:
            return EXIT_FAILED
        # A busy scope is what a re-run can fix; rows that cannot move are not.
        if summary.statuses[MigrationRun.Status.SKIPPED]:
            return EXIT_INCOMPLETE
        if summary.statuses[MigrationRun.Status.PARTIAL_SUCCESS]:
            return EXIT_STUCK
        return 0

    # --- cutover ---------------------------------------------------------------------------

    def _cutover(self, options):
        to_authz, orgs, as_json = options["to"] == "authz", options["org"], options["json"]
        self.warnings = api.unknown_scopes([], orgs)
        if not as_json:
            for warning in self.warnings:
                self._say(1, f"warning: {warning}", err=True)
        if not options["dry_run"] and options["interactive"]:
            self._ask(
                f"This will set the global flag to {options['to']} and move, org by org, "
                f"the roles of {', '.join(orgs) if orgs else 'every org'} that follow it.",
                self.stderr if as_json else self.stdout,
            )
        stop, steps = _StopFlag(), []
        with stop.installed(), watcher_only():
            for step in api.cutover(
                to_authz,
                orgs=orgs or None,
                pause=options["sleep"],
                dry_run=options["dry_run"],
                should_stop=stop,
                trigger=MigrationRun.Trigger.COMMAND,
            ):
                steps.append(step)
                if not as_json:
                    for line in _cutover_lines(step):
                        self._say(1, line)
        code, text = _cutover_exit(steps, options["dry_run"])
        if as_json:
            document = {**_cutover_document(options, steps, code), "warnings": self.warnings}
            self.stdout.write(json.dumps(document, indent=2))
        elif not code:
            self._say(1, text)
        if code:
            raise CommandError(text, returncode=code)

    def _verify(self, courses, orgs, everything, options):
        report = api.verify(courses=courses, orgs=orgs, everything=everything)
        drift = report.drift
        if options["json"]:
            self.stdout.write(json.dumps(_verify_document(report, self.warnings), indent=2))
        else:
            self._print_verify(report)
        if drift:
            raise CommandError(
                "drift found; `authz_migrate sync` with the same selection moves these roles",
                returncode=EXIT_DRIFT,
            )
        if report.cannot_move:
            raise CommandError(
                "rows that cannot move remain; no sync moves them: fix or remove the rows "
                "listed above, then verify again",
                returncode=EXIT_STUCK,
            )

    def _print_verify(self, report) -> None:
        drift = report.drift
        if drift:
            self._say(1, f"{len(drift)} scope(s) with roles in the wrong system:")
            for p in drift:
                where = "Casbin" if p.authz_enabled else "legacy"
                self._say(
                    1,
                    f"  {p.scope}: flag says {where}; {p.legacy_rows} legacy "
                    f"row(s), {p.casbin_rows} Casbin row(s)",
                )
        if report.cannot_move:
            total = sum(report.cannot_move.values())
            self._say(1, f"{total} row(s) belong in the other system but cannot move:")
            for reason, count in sorted(report.cannot_move.items()):
                sample = ", ".join(
                    f"#{row['id']} {row.get('scope', '')}"
                    for row in report.cannot_move_rows[reason]
                )
                self._say(1, f"  {reason} ({count}): {REASONS.get(reason, reason)}; {sample}")
        if not drift and not report.cannot_move:
            self._say(1, "Every selected scope is in step with its flag.")

    def _status(self, options):
        runs = MigrationRun.objects.select_related("triggered_by").order_by("-created_at", "-id")
        if options["status"]:
            runs = runs.filter(status=options["status"])
        if options["scope"]:
            runs = runs.filter(scope_key=options["scope"])
        runs = list(runs[: options["limit"]])
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
        progress = cutover.progress()
        if options["json"]:
            self.stdout.write(json.dumps({"runs": records, "cutover": progress}, indent=2))
            return
        if progress["released"] or progress["pinned"]:
            self.stdout.write(_cutover_progress_line(progress))
        # The listing is what status is for: printed at every verbosity.
        if not records:
            self.stdout.write("No runs.")
            return
        for r in records:
            who = r["triggered_by"] or "-"
            self.stdout.write(
                f"#{r['id']:<6} {r['created_at'][:19]}  {r['status']:<15} {r['migration_type']:<8} "
                f"{r['scope_type']:<8} {r['scope_key'] or '(instance)':<40} {r['trigger']:<11} "
                f"{who:<12} moved {r['moved']}, could not move {r['could_not_move']}"
            )


def _verify_document(report, warnings) -> dict:
    return {
        "drift": [
            {
                "scope": p.scope,
                "org": p.org,
                "course": p.course,
                "flag": "casbin" if p.authz_enabled else "legacy",
                "legacy_rows": p.legacy_rows,
                "casbin_rows": p.casbin_rows,
            }
            for p in report.drift
        ],
        "cannot_move": {
            reason: {
                "count": count,
                "description": REASONS.get(reason, reason),
                "rows": report.cannot_move_rows[reason],
            }
            for reason, count in sorted(report.cannot_move.items())
        },
        "warnings": warnings,
    }


def _checked_status_options(options: dict) -> dict:
    """``status``'s options, checked before any query (exit 2 on bad input)."""
    _check_numbers(options, _STATUS_NUMBERS)
    if options.get("status") not in (None, *MigrationRun.Status.values):
        raise _usage(f"argument --status: {options['status']!r} is not a run status")
    if options.get("scope") is not None:
        options["scope"] = _status_scope(options["scope"])
    return options


def _checked_cutover_options(options: dict) -> dict:
    """``cutover``'s options, checked before any query (exit 2 on bad input)."""
    _check_numbers(options, (("sleep", "--sleep", _seconds),))
    if options.get("to") not in CUTOVER_TARGETS:
        raise _usage(f"argument --to: choose {' or '.join(CUTOVER_TARGETS)}")
    options["org"] = _checked_scopes((), options.get("org") or [])[1]
    options.setdefault("sleep", 0.0)
    options.setdefault("interactive", True)
    return options


def _cutover_lines(step) -> list[str]:
    """What a terminal shows of one cutover step."""
    detail = step.detail
    if step.kind == cutover.PLAN:
        return _cutover_plan_lines(detail)
    if step.kind == cutover.PINNED:
        where = "authz" if detail["global_flag"] else "legacy"
        return [f"Pinned {len(detail['orgs'])} org(s) on their state; global flag set to {where}."]
    if step.kind == cutover.RELEASED:
        run = f" (run #{step.run.pk})" if step.run else ""
        return [
            f"  {step.org}: released, moved {step.moved} role row(s) to {detail['target']}; "
            f"parity: {detail['left_in_source']} left behind{run}"
        ]
    if step.kind == cutover.LEFT:
        return [f"  {step.org}: left alone: {detail['reason']}"]
    if step.kind == cutover.FAILED:
        return [f"  {step.org}: FAILED and stays pinned (run #{step.run.pk}): {detail['error']}"]
    return [f"Interrupted; {len(detail['left'])} org(s) still pinned."]


def _cutover_plan_lines(plan: dict) -> list[str]:
    lines = [
        f"Cutover to {plan['to']}: global flag "
        f"{'on' if plan['global_flag']['before'] else 'off'} -> "
        f"{'on' if plan['global_flag']['after'] else 'off'}; {len(plan['pin'])} org(s) to pin, "
        f"{len(plan['release'])} to release, {plan['rows_to_move']} role row(s) to move."
    ]
    for org in plan["release"]:
        lines.append(
            f"  {org['org']}: {org['legacy_rows']} legacy row(s), {org['casbin_rows']} Casbin "
            "row(s)"
        )
    lines.append(_estimate_line(plan["estimate"]))
    for org, where in plan["operator_pinned_orgs"].items():
        lines.append(f"  {org}: forced to {where} by an operator's override: left alone")
    courses = plan["pinned_courses"]
    if courses["count"]:
        more = f" and {courses['more']} more" if courses["more"] else ""
        lines.append(
            f"  {courses['count']} course(s) with their own override keep their state: "
            f"{', '.join(courses['items'])}{more}"
        )
    return lines


def _estimate_line(estimate: dict) -> str:
    rate = estimate["rate"]
    if rate["source"] == "measured":
        source = f"measured over this site's last {rate['runs']} completed move(s)"
    else:
        source = "a conservative default: no completed move of this site to measure"
    return (
        f"Estimate: about {_seconds_text(estimate['seconds'])}: {estimate['rows']} row(s) at "
        f"{rate['rows_per_second']:,.0f} rows/s ({source}) + {estimate['orgs']} org(s) x "
        f"{estimate['per_org_overhead']} s + --sleep {estimate['sleep']} s between orgs."
    )


def _seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s"


def _cutover_progress_line(progress: dict) -> str:
    held = progress["pinned"]
    names = ", ".join(held[:10]) + (f" and {len(held) - 10} more" if len(held) > 10 else "")
    line = (
        f"Cutover: {progress['released']} org(s) released ({progress['rows_moved']} role "
        f"row(s) moved), {len(held)} still pinned"
    )
    if held:
        line += f": {names}; `authz_migrate cutover --to authz|legacy` releases them"
    return line + "."


def _cutover_exit(steps, dry_run: bool) -> tuple[int, str]:
    last = steps[-1] if steps else None
    if last is not None and last.kind == cutover.FAILED:
        return EXIT_FAILED, (
            f"{last.org}: its move failed and was rolled back; it stays pinned, its roles "
            f"where they were; see run #{last.run.pk} (authz_migrate status --status failed), "
            "fix the cause, then run the same command again to continue"
        )
    if last is not None and last.kind == cutover.INTERRUPTED:
        return EXIT_INTERRUPTED, (
            "interrupted between two orgs; every org is consistent (released or still "
            "pinned); run the same command again to continue"
        )
    if any(s.outcome and s.outcome.counts.get("could_not_move") for s in steps):
        return EXIT_STUCK, (
            "done but for rows that cannot move (authz_migrate verify --all lists them); "
            "no re-run moves them: fix or remove those rows"
        )
    if dry_run:
        return 0, "Dry run: nothing changed."
    moved = sum(s.moved for s in steps)
    return 0, f"Cutover done: moved {moved} role row(s)."


def _cutover_document(options: dict, steps, code: int) -> dict:
    def entry(step):
        return {
            "org": step.org,
            "moved": step.moved,
            "run": step.run.pk if step.run else None,
            "detail": step.detail,
        }

    by_kind = {kind: [s for s in steps if s.kind == kind] for kind in cutover.KINDS}
    return {
        "action": "cutover",
        "to": options["to"],
        "dry_run": options["dry_run"],
        "exit_code": code,
        "plan": by_kind[cutover.PLAN][0].detail if by_kind[cutover.PLAN] else None,
        "pinned": [o for s in by_kind[cutover.PINNED] for o in s.detail["orgs"]],
        "released": [entry(s) for s in by_kind[cutover.RELEASED]],
        "left_alone": [entry(s) for s in by_kind[cutover.LEFT]],
        "failed": [entry(s) for s in by_kind[cutover.FAILED]],
        "interrupted": bool(by_kind[cutover.INTERRUPTED]),
        "moved": sum(s.moved for s in steps),
    }


def _exit_text(code: int, summary: Summary, dry_run: bool) -> str:
    """The last line of a command that did not finish cleanly: what happened, what next."""
    if code == EXIT_FAILED:
        if dry_run:
            return "the dry run failed (nothing was written); the error is above"
        return (
            "a move failed and was rolled back; see the failed run "
            "(authz_migrate status --status failed), then run the same command again"
        )
    stuck = summary.could_not_move
    busy = summary.statuses[MigrationRun.Status.SKIPPED]
    if dry_run:
        parts = [f"{stuck} row(s) could not move (reasons in the summary)"] if stuck else []
        parts += ["a scope was busy with another run"] if busy else []
        return f"a real run would be incomplete: {'; '.join(parts)}; the dry run wrote nothing"
    parts = []
    if stuck:
        parts.append(
            f"{stuck} row(s) could not move and stayed where they were (which and why: "
            "authz_migrate verify with the same selection, or the run's page in the admin); "
            "no re-run moves them: fix or remove those rows"
        )
    if busy:
        parts.append("a scope was busy with another run; run the same command again")
    return f"{'incomplete' if busy else 'done but for rows that cannot move'}: {'; '.join(parts)}"


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
