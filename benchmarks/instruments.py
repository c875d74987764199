"""What the benchmark measures with: statement counts and time in SQL, the time spent in the
in-process Casbin enforcer, resident memory, and one ``measure`` for time, queries, memory or a
profile."""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import resource
import sys
import tracemalloc
from time import perf_counter


class StatementCounter:
    """Counts statements through ``connection.execute_wrapper``, and the wall time spent
    inside them (server work plus driver round trip): the statements CaptureQueriesContext
    records, without formatting and keeping their SQL (which costs time and memory when a
    statement carries 35,000 parameters)."""

    def __init__(self):
        self.count = 0
        self.seconds = 0.0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        started = perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += perf_counter() - started


class EnforcerTimer:
    """Times the app's ``migration_run_finished`` receiver (``authz_migration.enforcer.
    follow_moves``: it applies each committed move to the in-process Casbin enforcer), by
    reconnecting it, under the same dispatch_uid, wrapped in a timer. ``available`` is False
    when the app has no such receiver (then nothing is wrapped)."""

    UID = "authz_mig_enforcer"

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0
        self.available = False
        try:
            from authz_migration import enforcer as app_enforcer
            from authz_migration.signals import migration_run_finished
        except ImportError:
            return
        follow = getattr(app_enforcer, "follow_moves", None)
        if follow is None or not migration_run_finished.disconnect(dispatch_uid=self.UID):
            return

        def timed(sender, **kwargs):
            started = perf_counter()
            try:
                return follow(sender, **kwargs)
            finally:
                self.seconds += perf_counter() - started
                self.calls += 1

        self._receiver = timed
        migration_run_finished.connect(timed, dispatch_uid=self.UID, weak=False)
        self.available = True

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def read(self) -> float | None:
        return round(self.seconds, 4) if self.available else None


# The run's timer of the enforcer receiver (install_enforcer_timer, once Django is set up).
ENFORCER_TIMER: EnforcerTimer | None = None


def install_enforcer_timer() -> EnforcerTimer:
    global ENFORCER_TIMER
    ENFORCER_TIMER = EnforcerTimer()
    return ENFORCER_TIMER


def enforcer_policy_size() -> int | None:
    from casbin_adapter.enforcer import enforcer

    if not enforcer._initialized:
        return None
    model = enforcer.get_model()
    return sum(
        len(a.policy) for sec in ("p", "g") if sec in model.keys() for a in model[sec].values()
    )


def prepare_enforcer(mode: str) -> None:
    """Put casbin_adapter's in-process enforcer in the state of a process started now.

    "loaded": loaded from casbin_rule as it is (what every Django process of a site does at
    startup once casbin_adapter's migration has run: its AppConfig.ready() loads the whole
    policy); "cold": not loaded (the app then leaves it alone). Never timed.
    """
    from casbin_adapter.enforcer import enforcer, initialize_enforcer

    if mode == "loaded":
        if enforcer._initialized:
            enforcer.load_policy()
        else:
            initialize_enforcer("default")
    elif enforcer._initialized:
        # Forget the loaded policy: follow_moves leaves an enforcer that is not loaded alone.
        enforcer._initialized = False


def rss_mib() -> float:
    """``ru_maxrss``: the process's peak resident set size so far, in MiB (KiB on Linux,
    bytes on macOS). It never goes down, and Linux carries it across ``execve``."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0:
    ``echo 5 > /proc/self/clear_refs``), so that the next :func:`peak_rss_mib` is the peak of
    what runs in between. False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float | None:
    """VmHWM of /proc/self/status: peak RSS since the last :func:`reset_peak_rss`."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure(fn, mode: str):
    """Run ``fn`` once. mode "time": wall seconds (perf_counter) and a cheap statement count;
    "queries": CaptureQueriesContext; "memory": tracemalloc peak (MiB of Python allocations);
    "profile": cProfile stats text."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    gc.collect()
    if mode == "time":
        counter = StatementCounter()
        if ENFORCER_TIMER is not None:
            ENFORCER_TIMER.reset()
        resettable = reset_peak_rss()
        with connection.execute_wrapper(counter):
            started = perf_counter()
            result = fn()
            elapsed = perf_counter() - started
        return {
            "seconds": elapsed,
            "peak_rss_mib": peak_rss_mib() if resettable else None,
            "statements": counter.count,
            "sql_seconds": counter.seconds,
            "enforcer_seconds": ENFORCER_TIMER.read() if ENFORCER_TIMER else None,
            "result": result,
        }
    if mode == "queries":
        with CaptureQueriesContext(connection) as captured:
            result = fn()
        return {"queries": len(captured), "result": result}
    if mode == "memory":
        tracemalloc.start()
        tracemalloc.reset_peak()
        try:
            result = fn()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return {"traced_peak_mib": peak / (1024 * 1024), "result": result}
    if mode == "profile":
        profiler = cProfile.Profile()
        started = perf_counter()
        result = profiler.runcall(fn)
        elapsed = perf_counter() - started
        texts = []
        views = (("cumulative", ()), ("tottime", ()), ("cumulative", ("authz_migration/",)))
        for order, restrict in views:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats(order).print_stats(*restrict, 15)
            # Drop pstats' preamble up to the column header, keep the table.
            lines = out.getvalue().splitlines()
            start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
            header = next((line.strip() for line in lines if "function calls" in line), "")
            where = f", {restrict[0]} functions only" if restrict else ""
            texts.append(
                f"{header}; top 15 by {order}{where}\n" + "\n".join(lines[start:]).rstrip()
            )
        return {
            "seconds": elapsed,
            "profile": texts[0],
            "profile_tottime": texts[1],
            "profile_app": texts[2],
            "result": result,
        }
    raise ValueError(mode)
