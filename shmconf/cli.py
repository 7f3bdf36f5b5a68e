"""The ``shmconf`` command: publish a config, and see, compare, roll back and confirm it.

Exit codes: 0 done, 1 failed (the message says why and what to do next),
2 usage. ``--json`` output is stable: its keys are documented in
``docs/cli.md`` and only ever added to. Secrets are redacted in every output.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final, NoReturn

import orjson

from shmconf import __version__, _paths, content
from shmconf.errors import CommandError, ConfigValidationError, ShmconfError, SourceError
from shmconf.history import History, Version
from shmconf.model import import_model
from shmconf.protocol import control
from shmconf.protocol.block import SHM_DIR, list_shm_names, other_layout_names
from shmconf.protocol.layout import anchor_shm_name, validate_name
from shmconf.rollout import Rollout
from shmconf.status import ReaderStatus, Status, collect, running_publisher

log = logging.getLogger("shmconf.cli")

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

#: How long ``reload`` and ``rollback`` wait for the running publisher to answer.
DEFAULT_REPLY_TIMEOUT_S: Final = 10.0


# -- helpers ---------------------------------------------------------------------


def load_model(spec: str | None) -> type[Any] | None:
    """The ``--model pkg.mod:Class``, imported; a clear exit 1 when it cannot be."""
    if spec is None:
        return None
    try:
        return import_model(spec)
    except (ImportError, ValueError, TypeError) as exc:
        raise CommandError(f"--model: {exc}") from None


def _colour(text: str, code: str) -> str:
    """Colour only when stdout is a terminal (and NO_COLOR is unset)."""
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        return f"\033[{code}m{text}\033[0m"
    return text


def _when(ns: int) -> str:
    if not ns:
        return "-"
    return datetime.fromtimestamp(ns / 1e9).astimezone().isoformat(timespec="seconds")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _emit_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _history(name: str) -> History:
    """The kept versions of ``name``, for a command that only reads them."""
    state = _paths.existing_state_dir(validate_name(name))
    if state is None or not (state / "history").is_dir():
        raise CommandError(f"no config named {name!r}: nothing is published under that name "
                           f"and no history is kept in {_paths.runtime_path()}")
    return History(state / "history")


def _version(history: History, generation: int) -> Version:
    found = history.get(generation)
    if found is None:
        kept = ", ".join(str(v.generation) for v in history.versions()) or "none"
        raise CommandError(f"generation {generation} is not in the history (kept: {kept})")
    return found


def _live_publisher(status: Status) -> int | None:
    return status.publisher_pid if status.publisher_alive else None


# -- publish / validate ----------------------------------------------------------


def cmd_publish(args: argparse.Namespace) -> int:
    try:
        return _publish(args)
    except (SourceError, ConfigValidationError) as exc:
        if args.start_without_source or not _published_before(args.name):
            raise
        raise CommandError(
            f"{exc}\n(the last good version stays published; to start anyway and serve it "
            "until the sources are fixed, pass --start-without-source)") from None


def _published_before(name: str) -> bool:
    try:
        return collect(name, reclaim=False).generation > 0
    except ShmconfError:
        return False


def _publish(args: argparse.Namespace) -> int:
    from shmconf.publisher import Publisher

    publisher = Publisher(
        args.name,
        sources=args.config,
        model=load_model(args.model),
        debounce=args.debounce,
        poll=args.poll,
        history=args.history,
        env_prefix=args.env_prefix,
        group=args.group,
        max_bytes=args.max_bytes,
        standby=args.standby,
        start_without_source=args.start_without_source,
        rollout=args.rollout,
    )
    try:
        publisher.serve_forever()
    finally:
        publisher.close()
    log.info("config %r: publisher stopped", args.name)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """Load, merge and validate as the publisher would, and publish nothing."""
    try:
        return _validate(args)
    except ShmconfError as exc:
        if args.json:  # scripts read stdout; the message still goes to stderr
            _emit_json({"ok": False, "error": str(exc),
                        "problems": list(getattr(exc, "problems", ()))})
        raise


def _validate(args: argparse.Namespace) -> int:
    from shmconf.errors import ConfigValidationError, validation_problems
    from shmconf.model import (
        apply_environment,
        is_settings,
        published_data,
        round_trip_problems,
        snapshot_model,
        validate,
    )
    from shmconf.sources import load_sources

    model = load_model(args.model)
    if model is not None and args.env_prefix and is_settings(model):
        raise CommandError(f"--env-prefix is for models that are not BaseSettings; "
                           f"{model.__name__} reads its own environment with its model_config "
                           "(env_prefix, env_nested_delimiter): leave --env-prefix out")
    loaded = load_sources(args.config, env_prefix=args.env_prefix, model=model)
    for variable in loaded.unmatched:
        print(f"shmconf validate: warning: {variable} sets no field of "
              f"{getattr(model, '__name__', 'the model')}", file=sys.stderr)
    data: dict[str, Any] = loaded.data
    secrets: list[str] = []
    if model is not None:
        snapshot = snapshot_model(model)
        try:
            with apply_environment():
                instance = validate(snapshot, loaded.data)
        except ValueError as exc:
            problems = validation_problems(exc, loaded.origin_of, loaded.sources)
            raise ConfigValidationError(" + ".join(loaded.sources), problems,
                                        model.__name__) from None
        data = published_data(instance)
        problems = round_trip_problems(snapshot, instance, data, content.canonical(data))
        if problems:
            raise ConfigValidationError(" + ".join(loaded.sources), problems, model.__name__)
        secrets = content.secret_paths(instance)
    digest = content.digest(content.canonical(data))
    if args.print or args.json:
        redacted = content.redact(data, secrets)
        origins = {".".join(path): source for path, source in loaded.origins.items()}
        if args.json:
            _emit_json({"ok": True, "sources": list(loaded.sources), "digest": digest,
                        "model": getattr(model, "__name__", None), "config": redacted,
                        "set_in": origins, "unmatched": list(loaded.unmatched)})
        else:
            _print_with_origins(redacted, origins)
        return EXIT_OK
    print(f"ok: {len(loaded.sources)} source(s) valid, digest {digest[:12]}")
    return EXIT_OK


def _print_with_origins(data: Any, origins: dict[str, str], path: tuple[str, ...] = (),
                        indent: int = 0) -> None:
    """The merged config as indented ``key: value`` lines, each with the source that set it."""
    for key, value in data.items():
        here = (*path, str(key))
        where = origins.get(".".join(here))
        note = f"  # {where}" if where else ""
        pad = "  " * indent
        if isinstance(value, dict) and value:
            print(f"{pad}{key}:{note}")
            _print_with_origins(value, origins, here, indent + 1)
        else:
            print(f"{pad}{key}: {orjson.dumps(value).decode()}{note}")


# -- status / show ---------------------------------------------------------------


def _owner_arg(owner: str | None) -> int | str | None:
    """``--trusted-owner`` as attach() takes it: a uid, or a user name."""
    return int(owner) if owner is not None and owner.isdigit() else owner


def _trusted_uids(owner: str | None) -> frozenset[int] | None:
    if owner is None:
        return None
    import pwd

    try:
        uid = int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise CommandError(f"--trusted-owner {owner}: no such user") from None
    return frozenset({os.geteuid(), uid})


def cmd_status(args: argparse.Namespace) -> int:
    if args.wait_for is not None:
        return _wait_for(args.name, args.wait_for, args.timeout, as_json=args.json,
                         trusted=args.trusted)
    status = collect(args.name, trusted_uids=args.trusted)
    if args.json:
        _emit_json(status.to_json())
        return EXIT_OK
    service = status.service
    rows = [
        ("name", status.name),
        ("generation", str(status.generation)),
        ("published", f"{_when(status.published_ns)} ({_age(status.age_s)} ago)"),
        ("digest", (status.digest or "-")[:16]),
        ("origin", status.origin or "-"),
        ("sources", ", ".join(status.sources) or "-"),
        ("changed", ", ".join(status.changed) or "-"),
        ("publisher", _publisher_state(status)),
        *_supervisor_rows(status.supervisor),
        *_rollout_rows(status),
        ("slot", f"{status.slot_used} of {status.slot_capacity} bytes "
                 f"(data segment {status.data_serial})"),
    ]
    if service.get("last_error"):
        first, *more = str(service["last_error"]).splitlines()
        rows.append(("last error", first))
        rows += [("", line.strip()) for line in more]
    for health in service.get("source_health") or []:
        found = _health_rows(health)
        if not status.publisher_alive:
            # Written by a publisher that no longer runs: its last word, not now.
            found[0] = (found[0][0], found[0][1] + " (last known: the publisher is not running)")
        rows += found
    if service.get("rejections"):
        rows.append(("rejections", ", ".join(f"{k} {v}" for k, v in service["rejections"].items())))
    print(_format_table(rows))
    print()
    if status.readers_unlisted:
        print(f"readers: not listed: {status.readers_unlisted}")
        return EXIT_OK
    if not status.readers:
        hints = []
        if status.readers_ignored:
            hints.append(f"{status.readers_ignored} table entries ignored: no reader could have "
                         "written them")
        if status.readers_table_full:
            hints.append("the table is full: readers may read unlisted")
        print("readers: none attached" + (f" ({'; '.join(hints)})" if hints else ""))
        return EXIT_OK
    # ROLE while a rollout runs: canaries follow its candidate, the others the
    # stable generation.
    roles = status.rollout is not None
    reader_rows = [("PID", "GENERATION", *(("ROLE",) if roles else ()), "ADOPTS", "STATE")]
    for r in status.readers:
        role = (("canary" if r.canary else "stable"),) if roles else ()
        reader_rows.append((str(r.pid), str(r.generation), *role,
                            "when idle" if r.idle_adoption else "on read",
                            _reader_state(r, status.generation, status.candidate)))
    full = " (the table is full: more readers may read unlisted)" \
        if status.readers_table_full else ""
    if status.readers_ignored:
        full += (f"; {status.readers_ignored} table entries ignored: no reader could have "
                 "written them (damage, or a group member imitating readers)")
    print(f"readers: {sum(r.alive for r in status.readers)} live{full}")
    print(_format_table(reader_rows))
    return EXIT_OK


def _reader_state(reader: ReaderStatus, published: int, candidate: int | None = None) -> str:
    """``published``: the stable generation; ``candidate``: the running rollout's, if any."""
    if not reader.alive:
        return _colour("dead (entry reclaimed)", "31")
    if reader.canary and candidate:
        return _canary_state(reader, candidate)
    if reader.generation >= published:
        return "current"
    if reader.refused > reader.generation:
        return _colour(f"refused generation {reader.refused} (see its log)", "31")
    behind = f"behind by {published - reader.generation}"
    if reader.idle_adoption:
        return _colour(f"{behind}, adopting", "33")
    return _colour(f"{behind} until its next read (no idle adoption)", "33")


def _canary_state(reader: ReaderStatus, candidate: int) -> str:
    if reader.generation >= candidate:
        return "current (the candidate)"
    if reader.refused > reader.generation:
        return _colour(f"refused generation {reader.refused} (see its log)", "31")
    return _colour("adopting the candidate", "33")


def _health_text(health: Any) -> str:
    """A group's ``{workers, requests, failures, checks_failed}`` as the rollout judges it."""
    if not isinstance(health, dict):
        return "not reported yet"
    workers = int(health.get("workers") or 0)
    requests, failures = int(health.get("requests") or 0), int(health.get("failures") or 0)
    ratio = failures / requests if requests else 0.0
    text = (f"{requests} request{'' if requests == 1 else 's'}, {failures} failed "
            f"({ratio:.1%}) in {workers} worker{'' if workers == 1 else 's'}")
    if health.get("checks_failed"):
        text += f", {health['checks_failed']} failed health check(s)"
    return text


def _rollout_rows(status: Status) -> list[tuple[str, str]]:
    """The running rollout (candidate, step, canaries, health, bake) and the last one's end."""
    rows = []
    rollout = status.rollout
    if rollout is not None:
        text = (f"generation {rollout['candidate']} to canaries, generation {rollout['stable']} "
                "to the others")
        if rollout.get("step") is not None:
            text += f": step {rollout['step']} of {rollout['steps']}"
            size = rollout.get("step_size")
            if isinstance(size, int):
                text += f" ({size} worker{'' if size == 1 else 's'})"
            elif size is not None:
                text += f" ({size} of the workers)"
        if rollout.get("started_ns"):
            text += "," + _since(rollout["started_ns"], "started")
        rows.append(("rollout", text))
        if not status.publisher_alive:
            rows.append(("", _colour("unfinished: its publisher is not running; the next "
                                     "publisher to start rolls the candidate back", "31")))
        pids = rollout.get("canaries") or []
        rows.append(("canaries", ("pid " + ", ".join(map(str, pids))) if pids else
                     "none yet (chosen among the workers with idle adoption)"))
        rows.append(("canary health", _health_text(rollout.get("canary_health"))))
        rows.append(("other workers", _health_text(rollout.get("stable_health"))))
        if not status.publisher_alive:
            pass  # nobody bakes or judges it any more
        elif rollout.get("waiting"):
            rows.append(("bake", f"done; {rollout['waiting']} (or `shmconf rollout "
                                 f"{status.name} promote`)"))
        elif isinstance(rollout.get("bake_left_s"), (int, float)):
            left = float(rollout["bake_left_s"])
            rows.append(("bake", f"{_age(left)} left" if left > 0 else "done; judging"))
    last = status.last_rollout
    if last:
        outcome = str(last.get("outcome"))
        shown = _colour(outcome, {"promoted": "32", "rolled back": "31"}.get(outcome, "33"))
        text = f"generation {last.get('candidate')} {shown}{_since(last.get('ended_ns'), 'at')}"
        if outcome == "rolled back" and last.get("generation"):
            text += f"; generation {last['generation']} holds the stable content"
        rows.append(("last rollout", text))
        if last.get("reason"):
            rows.append(("", str(last["reason"])))
    return rows


def _since(ns: int | None, word: str = "since") -> str:
    """`` since TIME (AGE ago)``, or empty when ``ns`` is unknown."""
    if not ns:
        return ""
    return f" {word} {_when(ns)} ({_age(max(0.0, (time.time_ns() - ns) / 1e9))} ago)"


def _in(ns: int | None) -> str:
    return f"{_age(max(0.0, (ns - time.time_ns()) / 1e9))}" if ns else "-"


def _publisher_state(status: Status) -> str:
    """Alive with its heartbeat, dead since its last heartbeat, or stopped."""
    if status.publisher_alive:
        return (f"pid {status.publisher_pid} {_colour('alive', '32')} "
                f"(heartbeat {_age(status.heartbeat_age_s)} ago)")
    if status.publisher_dead_since_ns:
        # Its pid is still in the anchor: it did not stop cleanly (killed,
        # crashed, or hung without heartbeats).
        return (f"pid {status.publisher_pid} {_colour('dead', '31')}"
                f"{_since(status.publisher_dead_since_ns)}")
    return f"{_colour('not running', '31')} (stopped)"


def _supervisor_rows(supervisor: dict[str, Any]) -> list[tuple[str, str]]:
    """The supervisor's restarts and state (publishers that an integration started)."""
    if not supervisor:
        return []
    if not supervisor.get("alive"):
        return [("supervisor", _colour(f"pid {supervisor.get('pid')} not running", "31")
                 + ": the publisher is not restarted until the server's master starts "
                 "it again (gunicorn: kill -HUP the master)")]
    state = str(supervisor.get("state"))
    shown = _colour(state, "32" if state == "serving" else "33")
    restarts = int(supervisor.get("restarts") or 0)
    text = (f"pid {supervisor.get('pid')}, publisher {shown}{_since(supervisor.get('since_ns'))}"
            f"; {restarts} restart{'' if restarts == 1 else 's'}")
    if state == "backoff":
        text += f", next start in {_in(supervisor.get('next_start_ns'))}"
    rows = [("supervisor", text)]
    if supervisor.get("last_exit"):
        rows.append(("last exit", f"{supervisor['last_exit']}"
                                  f"{_since(supervisor.get('last_exit_ns'), 'at')}"))
    return rows


def _health_rows(health: dict[str, Any]) -> list[tuple[str, str]]:
    """A source's (or the file watcher's) state, since when, and its last error."""
    state = str(health.get("state", "?"))
    text = f"{health.get('source')}: {_colour(state, '32' if state == 'ok' else '33')}"
    text += _since(health.get("since_ns"))
    if health.get("revision") is not None:
        text += f", revision {health['revision']}"
    if state != "ok" and health.get("failures"):
        text += f", {health['failures']} failure{'' if health['failures'] == 1 else 's'}"
    if state != "ok" and health.get("next_retry_ns"):
        text += f", next retry in {_in(health['next_retry_ns'])}"
    rows = [("source", text)]
    if health.get("error"):
        rows.append(("", str(health["error"])))
    return rows


def _wait_for(name: str, generation: int, timeout: float, *, as_json: bool,
              trusted: frozenset[int] | None = None) -> int:
    """``status --wait-for``: every live reader holds ``generation`` or later.

    A rollout's candidate counts once it is promoted (then every reader gets
    it); one that was rolled back or replaced never will, and ends the wait
    at once (docs/cli.md).
    """
    deadline = time.monotonic() + timeout
    pause = 0.01
    notes: dict[int, str] = {}
    while True:
        status = collect(name, trusted_uids=trusted)
        laggards = status.laggards(generation)
        state, note = _rollout_fate(name, generation, status, notes)
        if not state and status.generation >= generation and not laggards:
            live = [r for r in status.readers if r.alive]
            if as_json:
                _emit_json({"ok": True, "generation": generation, "readers": len(live)})
            else:
                print(f"ok: all {len(live)} live reader(s) hold generation {generation} or later")
            return EXIT_OK
        # Waiting longer cannot help: nobody will publish it, a reader refused
        # it, or its rollout ended without it.
        hopeless = state == "ended" or (
            status.generation < generation and not status.publisher_alive) or any(
            r.refused >= generation for r in laggards)
        if hopeless or time.monotonic() >= deadline:
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.2)
    reason = _wait_failure(name, generation, status, laggards, state=state, note=note)
    if as_json:
        _emit_json({
            "ok": False, "generation": generation, "published": status.generation,
            "laggards": [{"pid": r.pid, "generation": r.generation, "refused": r.refused,
                          "idle_adoption": r.idle_adoption, "canary": r.canary}
                         for r in laggards],
            "rollout": note or None,
        })
    if hopeless:
        raise CommandError(reason)
    raise CommandError(f"timed out after {timeout:g}s: {reason}")


def _rollout_fate(
    name: str, generation: int, status: Status, notes: dict[int, str]
) -> tuple[str, str]:
    """What a rollout did with ``generation``: ``(state, note)``.

    ``state`` is ``"candidate"`` (the running rollout's candidate: it reaches
    every reader when promoted), ``"ended"`` (rolled back or replaced: it
    never will; ``note`` says how, as the history does), ``"unrecorded"``
    (a candidate whose rollout just ended, its outcome not written yet), or
    empty when no rollout holds it back (published to every reader at once,
    or promoted). ``notes`` keeps the history's final notes between calls.
    """
    if status.generation == generation:
        return "", ""  # only a publish to every reader or a promote stores it there
    if status.candidate == generation:
        return "candidate", "candidate"
    note = notes.get(generation)
    if note is None:
        note = _history_note(name, generation)
        if note not in ("", "candidate"):  # a rollout's end never changes again
            notes[generation] = note
    last = status.last_rollout or {}
    if last.get("candidate") == generation and last.get("outcome") != "promoted" and (
            note in ("", "candidate")):
        note = f"{last.get('outcome')}: {last.get('reason')}"  # the history no longer has it
    if note.startswith(("rolled back", "replaced")):
        return "ended", note
    if note == "candidate":
        return "unrecorded", note
    return "", note


def _history_note(name: str, generation: int) -> str:
    """The rollout note the history keeps for ``generation`` ("" when none or not kept)."""
    state = _paths.existing_state_dir(name)
    if state is None or not (state / "history").is_dir():
        return ""
    try:
        found = History(state / "history").get(generation)
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # another user's history, or a damaged file: the rest still decides
    return found.rollout if found is not None else ""


def _wait_failure(name: str, generation: int, status: Status, laggards: list[ReaderStatus],
                  *, state: str, note: str) -> str:
    """Why ``--wait-for`` ends without every reader on ``generation``, and what to do."""
    rollout = status.rollout
    if state == "ended":
        now = (f"generation {rollout['candidate']} is rolling out now (wait for it instead)"
               if rollout is not None else f"every reader gets generation {status.generation}")
        return (f"generation {generation} will never reach every reader: it was {note}; "
                f"{now}")
    if state == "candidate" and rollout is not None:
        reason = (f"generation {generation} is the candidate of a running rollout "
                  f"(generation {rollout['stable']} stays with the others)")
        if not status.publisher_alive:
            return (f"{reason}, and its publisher is not running: the next publisher to start "
                    "rolls the candidate back")
        held = [r.pid for r in status.readers if r.alive and r.generation >= generation]
        if rollout.get("waiting"):
            when = f"its bake is done, {rollout['waiting']}"
        elif isinstance(rollout.get("bake_left_s"), (int, float)):
            when = f"{_age(float(rollout['bake_left_s']))} of its bake left"
        else:
            when = "it is baking"
        return (f"{reason}: {len(held)} canar{'y holds' if len(held) == 1 else 'ies hold'} it; "
                f"the other readers get it when it is promoted ({when}; "
                f"`shmconf rollout {name} promote` promotes it now)")
    if state == "unrecorded":
        return (f"the rollout of generation {generation} ended, and its outcome is not "
                "recorded yet (see `shmconf history`)")
    advice = ""
    if status.generation < generation:
        reason = f"generation {generation} is not published (published: {status.generation})"
        if not status.publisher_alive:
            reason += "; no publisher is running to publish it: start one, then wait again"
    else:
        behind = ", ".join(f"pid {r.pid} at {r.generation}" for r in laggards)
        reason = f"readers still behind: {behind}"
        if any(r.refused > r.generation for r in laggards):
            advice = ("; a reader that refused a generation (it does not fit that worker's "
                      "model) says why in its log")
        if any(not r.idle_adoption for r in laggards):
            advice += ("; a reader without idle adoption adopts on its next read: attach with "
                       "idle_adoption=True (the integrations' default)")
    return f"{reason}{advice}"


def _published_view(name: str, trusted_owner: str | None = None
                    ) -> tuple[int, dict[str, Any], Any]:
    from shmconf.errors import SegmentNotFoundError
    from shmconf.reader import attach

    if anchor_shm_name(name) not in list_shm_names(name):
        raise SegmentNotFoundError(name, anchor_shm_name(name))
    try:
        reader = attach(name, timeout=0, register=False, make_current=False,
                        trusted_owner=_owner_arg(trusted_owner))
    except ShmconfError as exc:
        raise CommandError(f"config {name!r} cannot be read: {exc}") from None
    try:
        meta = dict(reader.meta)
        data = orjson.loads(orjson.dumps(reader.get(), default=dict))
        return reader.generation, meta, data
    finally:
        reader.close()


def cmd_show(args: argparse.Namespace) -> int:
    generation, meta, data = _published_view(args.name, args.trusted_owner)
    secrets = list(meta.get("secrets", []))
    redacted = content.redact(data, secrets)
    path = args.path.split(".") if args.path else []
    try:
        value = content.value_at_path(redacted, path)
    except KeyError as exc:
        raise CommandError(f"no path {exc.args[0]!r} in config {args.name!r}") from None
    if args.json:
        _emit_json({"name": args.name, "generation": generation, "path": args.path,
                    "digest": meta.get("digest"), "config": value})
    else:
        print(f"# {args.name} generation {generation}" + (f", {args.path}" if args.path else ""))
        sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    return EXIT_OK


# -- history / diff ----------------------------------------------------------------


def cmd_history(args: argparse.Namespace) -> int:
    versions = _history(args.name).versions()
    if args.json:
        _emit_json([
            {"generation": v.generation, "published_ns": v.published_ns, "digest": v.digest,
             "origin": v.origin, "sources": list(v.sources), "changed": list(v.changed),
             "rollout": v.rollout}
            for v in versions
        ])
        return EXIT_OK
    if not versions:
        print(f"no history kept for {args.name!r}")
        return EXIT_OK
    # ROLLOUT once the name has had one: "candidate", "promoted", "rolled back:
    # why", "replaced: why", and "rollback of N: why" for the version that undid one.
    notes = any(v.rollout for v in versions)
    rows = [("GENERATION", "PUBLISHED", "DIGEST", "ORIGIN", *(("ROLLOUT",) if notes else ()),
             "CHANGED")]
    rows += [
        (str(v.generation), _when(v.published_ns), v.digest[:12], v.origin,
         *((v.rollout or "-",) if notes else ()), ", ".join(v.changed) or "-")
        for v in versions
    ]
    print(_format_table(rows))
    return EXIT_OK


def diff_versions(old: Version, new: Version) -> list[dict[str, Any]]:
    """Changed paths with old and new values; a secret shows only that it changed."""
    secrets = set(old.secrets) | set(new.secrets)
    changes = []
    for path in content.changed_paths(old.data, new.data, limit=10_000):
        parts = path.split(".")
        entry: dict[str, Any] = {"path": path}
        is_secret = any(".".join(parts[: i + 1]) in secrets or content.looks_secret(p)
                        for i, p in enumerate(parts))
        for side, version in (("old", old), ("new", new)):
            try:
                value = content.value_at_path(version.data, parts)
            except KeyError:
                entry[side] = None
                entry[f"{side}_present"] = False
                continue
            entry[f"{side}_present"] = True
            entry[side] = (content.REDACTED if is_secret
                           else content.redact(value, secrets, tuple(parts)))
        entry["secret"] = is_secret
        changes.append(entry)
    return changes


def cmd_diff(args: argparse.Namespace) -> int:
    history = _history(args.name)
    old, new = _version(history, args.a), _version(history, args.b)
    changes = diff_versions(old, new)
    if args.json:
        _emit_json({"name": args.name, "a": args.a, "b": args.b, "changes": changes})
        return EXIT_OK
    if not changes:
        print(f"generations {args.a} and {args.b} hold the same config")
        return EXIT_OK
    for c in changes:
        if c["secret"]:
            print(f"{c['path']}: secret changed")
            continue
        old_text = orjson.dumps(c["old"]).decode() if c["old_present"] else "(absent)"
        new_text = orjson.dumps(c["new"]).decode() if c["new_present"] else "(absent)"
        print(f"{c['path']}: {_colour(old_text, '31')} -> {_colour(new_text, '32')}")
    return EXIT_OK


# -- rollback / reload -------------------------------------------------------------


def _wait_service(
    name: str, timeout: float, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    from shmconf.status import read_service_status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service = read_service_status(name)
        if done(service):
            return service
        time.sleep(0.02)
    raise CommandError(f"the publisher of {name!r} did not answer within {timeout:g}s; "
                       "see its log")


def cmd_rollback(args: argparse.Namespace) -> int:
    status = collect(args.name, trusted_uids=args.trusted)
    pid = _live_publisher(status)
    # The target is named now, so that the request (and a retry of it) means
    # one version whatever is published meanwhile.
    target = args.to if args.to is not None else _previous_generation(args.name, status)
    if pid is None:
        return _rollback_offline(args.name, target)
    request_id = uuid.uuid4().hex
    control.send_request(_paths.state_dir(args.name),
                         {"id": request_id, "action": "rollback", "to": target})
    os.kill(pid, signal.SIGHUP)
    retry = (f"retry with `shmconf rollback {args.name} --to {target}` (it publishes nothing "
             "if that version is already in force)")
    if args.timeout == 0:
        print(f"rollback to generation {target} requested from publisher pid {pid}; not "
              f"waiting (see `shmconf status {args.name}`)")
        return EXIT_OK
    try:
        service = _wait_service(
            args.name, args.timeout,
            lambda s: (s.get("last_request") or {}).get("id") == request_id,
        )
    except CommandError as exc:
        raise CommandError(f"{exc}; the request to roll back to generation {target} stays "
                           f"until the publisher's next SIGHUP: {retry}") from None
    outcome = service["last_request"]
    if not outcome.get("ok"):
        raise CommandError(f"rollback failed: {outcome.get('error')}")
    print(f"rolled back: generation {outcome['generation']} now holds the older content; "
          "the publisher keeps it until its sources change")
    return EXIT_OK


def _previous_generation(name: str, status: Status) -> int:
    """The kept version before the published one, as ``Publisher.rollback()`` picks it."""
    found = _history(name).before(status.generation, status.digest)
    if found is None:
        raise CommandError(f"config {name!r}: no earlier version is kept to roll back to")
    return found.generation


def _rollback_offline(name: str, to: int | None) -> int:
    from shmconf.publisher import Publisher

    versions = _history(name).versions()
    sources = list(versions[-1].sources) if versions else []
    publisher = Publisher(name, sources=[s for s in sources if os.path.exists(s)])
    try:
        generation = publisher.rollback(to)
    finally:
        publisher.close()
    print(f"rolled back (no publisher running): generation {generation} holds the older content")
    return EXIT_OK


def cmd_rollout(args: argparse.Namespace) -> int:
    """Promote the running rollout's candidate to every worker now, or roll it back."""
    try:
        return _rollout_decision(args)
    except ShmconfError as exc:
        if args.json:  # scripts read stdout; the message still goes to stderr
            _emit_json({"ok": False, "decision": args.decision, "error": str(exc)})
        raise


def _rollout_decision(args: argparse.Namespace) -> int:
    name, decision = args.name, args.decision
    status = collect(name, trusted_uids=args.trusted)
    rollout = status.rollout
    if rollout is None:
        raise CommandError(_no_rollout(status))
    pid = _live_publisher(status)
    if pid is None:
        raise CommandError(_no_publisher_for_rollout(status, decision))
    candidate, stable = int(rollout["candidate"]), int(rollout["stable"])
    request_id = uuid.uuid4().hex
    try:
        # "candidate": what this command saw; a publisher that checks it refuses a
        # decision about a candidate that replaced it meanwhile.
        control.send_request(_paths.state_dir(name),
                             {"id": request_id, "action": "rollout", "decision": decision,
                              "candidate": candidate})
        os.kill(pid, signal.SIGHUP)
    except PermissionError:
        raise CommandError(f"publisher pid {pid} of {name!r} runs as another user: run "
                           f"`shmconf rollout {name} {decision}` as that user") from None
    if args.timeout == 0:
        if args.json:
            _emit_json({"ok": True, "decision": decision, "candidate": candidate,
                        "stable": stable, "generation": None})
        else:
            print(f"{decision} of generation {candidate} requested from publisher pid {pid}; "
                  f"not waiting (see `shmconf status {name}`)")
        return EXIT_OK
    try:
        service = _wait_service(
            name, args.timeout,
            lambda s: (s.get("last_request") or {}).get("id") == request_id,
        )
    except CommandError as exc:
        raise CommandError(f"{exc}; the request stays until the publisher's next SIGHUP "
                           f"(`shmconf status {name}` shows whether the rollout ended)") from None
    return _report_decision(args, service, candidate, stable)


def _report_decision(args: argparse.Namespace, service: dict[str, Any], candidate: int,
                     stable: int) -> int:
    """The publisher's answer to a ``rollout`` request, as the command prints it."""
    decision = args.decision
    outcome = service["last_request"]
    if not outcome.get("ok"):
        ended = service.get("last_rollout")
        if isinstance(ended, dict) and ended.get("candidate") == candidate and service.get(
                "rollout") is None:
            # It ended on its own (a verdict) between our look and the request.
            raise CommandError(f"no rollout is running any more: generation {candidate} was "
                               f"{ended.get('outcome')} before the request arrived: "
                               f"{ended.get('reason')}")
        raise CommandError(f"{decision} failed: {outcome.get('error')}")
    generation = int(outcome["generation"])
    ended = service.get("last_rollout")
    if isinstance(ended, dict) and ended.get("generation") == generation:
        # What the publisher decided about: a newer candidate may have
        # replaced the one this command saw.
        candidate, stable = int(ended["candidate"]), int(ended["stable"])
    if args.json:
        _emit_json({"ok": True, "decision": decision, "candidate": candidate, "stable": stable,
                    "generation": generation})
    elif decision == "promote":
        print(f"promoted: every worker gets generation {generation}")
    else:
        print(f"rolled back: generation {candidate} is withdrawn; every worker gets generation "
              f"{generation}, the content of generation {stable} (the sources' version stays "
              "out until they change)")
    return EXIT_OK


def _no_rollout(status: Status) -> str:
    """Why ``rollout`` has nothing to decide, with the last rollout's end."""
    text = f"no rollout is running for {status.name!r}"
    last = status.last_rollout
    if last:
        text += (f" (the last one: generation {last.get('candidate')} {last.get('outcome')}"
                 f"{_since(last.get('ended_ns'), 'at')})")
    elif status.publisher_alive and status.service.get("rollout_policy") is None:
        text += ("; its publisher sends each change to every worker at once (start it with "
                 "--canary N to roll changes out)")
    return text


def _no_publisher_for_rollout(status: Status, decision: str) -> str:
    """No publisher runs to carry out ``decision``: what a restart does, exactly."""
    rollout = status.rollout
    assert rollout is not None
    name, candidate = status.name, rollout["candidate"]
    sources = status.service.get("sources") or status.sources
    command = f"shmconf publish {name} " + (" ".join(f"-c {s}" for s in sources)
                                           if sources else "-c FILE")
    text = (f"no publisher of {name!r} is running to {decision} the rollout of generation "
            f"{candidate} (its canaries hold it, every other worker generation "
            f"{rollout['stable']}). A publisher rolls an unfinished candidate back when it "
            f"starts: run `{command}` with its usual options")
    if decision == "promote":
        return (text + "; with --canary it then rolls the sources' version out again, from "
                f"its first step: promote that one with `shmconf rollout {name} promote`")
    return (text + "; it then publishes what the sources hold (with --canary, as a new "
            "rollout): to keep the candidate from coming back, restore the sources first")


def cmd_reload(args: argparse.Namespace) -> int:
    from shmconf.status import read_service_status

    status = collect(args.name, trusted_uids=args.trusted)
    pid = _live_publisher(status)
    if pid is None:
        raise CommandError(f"no publisher of {args.name!r} is running; start one with "
                           f"`shmconf publish {args.name} -c FILE`")
    before = int(read_service_status(args.name).get("reloads", 0))
    os.kill(pid, signal.SIGHUP)
    service = _wait_service(args.name, args.timeout, lambda s: int(s.get("reloads", 0)) > before)
    if service.get("last_error"):
        raise CommandError(f"reload rejected; still serving generation {service['generation']}: "
                           f"{service['last_error']}")
    if service["generation"] > status.generation:
        print(f"reloaded: published generation {service['generation']}")
    else:
        print(f"reloaded: sources unchanged, generation {service['generation']} stays")
    return EXIT_OK


# -- unlink ------------------------------------------------------------------------


def cmd_unlink(args: argparse.Namespace) -> int:
    name = validate_name(args.name)
    running = running_publisher(name)
    if running is not None and not args.force:
        raise CommandError(f"publisher pid {running} is running for {name!r}; stop it first, "
                           "or pass --force (the publisher then stops at its next heartbeat)")
    from shmconf.writer import unlink_name

    # Every layout version's objects: the name is gone for old workers too. The
    # anchor is marked retired first, so that attached workers look for the
    # next publisher's.
    found = [s for s in list_shm_names(name) + other_layout_names(name)
             + [anchor_shm_name(name)] if os.path.lexists(os.path.join(SHM_DIR, s))]
    try:
        unlink_name(name)
        removed = [s for s in found if not os.path.lexists(os.path.join(SHM_DIR, s))]
    except PermissionError as exc:
        raise CommandError(f"cannot remove {exc.filename or 'a segment'} of {name!r}: another "
                           "user owns it; run `shmconf unlink` as that user (or root)") from None
    lock = _paths.runtime_path() / f"{name}.lock"  # unlinking creates nothing
    if lock.exists():
        lock.unlink()
        removed.append(str(lock))
    if args.purge:
        import shutil

        state = _paths.runtime_path() / name
        if state.exists():
            shutil.rmtree(state)
            removed.append(str(state))
    if not removed:
        raise CommandError(f"nothing to remove for {name!r}")
    print("removed: " + ", ".join(sorted(set(removed))))
    return EXIT_OK


# -- parser ------------------------------------------------------------------------


_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: No debounce, poll or timeout needs more; far more would overflow the
#: waits of the threads that use it (threading.TIMEOUT_MAX).
_LONGEST_S: Final = 86_400.0
_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*")


def duration(text: str) -> float:
    """Seconds from ``5``, ``2.5s``, ``100ms``, ``1m`` or ``1h`` (an argparse type)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write seconds (5, 0.5) or a number with a unit "
            "(100ms, 2s, 1m, 1h)")
    seconds = float(match[1]) * _UNITS[match[2] or "s"]
    if seconds > _LONGEST_S:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than a day")
    return seconds


class _DeprecatedMilliseconds(argparse.Action):
    """``--debounce-ms N``: the old spelling of ``--debounce Nms``, with a warning."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        try:
            milliseconds = int(values)
        except ValueError:
            parser.error(f"{option_string}: {values!r} is not a whole number of milliseconds")
        if milliseconds < 0:
            parser.error(f"{option_string}: {values!r} is negative")
        print(f"shmconf: warning: {option_string} is deprecated; use --debounce {values}ms",
              file=sys.stderr)
        setattr(namespace, self.dest, milliseconds / 1000)


def _publish_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debounce", type=duration, default=0.1, metavar="DURATION",
                   help="quiet time after a change before reloading (default 100ms)")
    p.add_argument("--debounce-ms", action=_DeprecatedMilliseconds, dest="debounce",
                   metavar="N", help=argparse.SUPPRESS)
    p.add_argument("--poll", type=duration, metavar="DURATION",
                   help="poll the files this often instead of using inotify (NFS)")
    p.add_argument("--history", type=int, default=20, metavar="N",
                   help="versions kept for history and rollback (default 20)")
    p.add_argument("--group", metavar="GROUP",
                   help="let GROUP's members attach (anchor and data read-only to them, "
                        "0640; the reader table 0660)")
    p.add_argument("--max-bytes", type=int, default=64 * 1024 * 1024, metavar="N",
                   help="largest serialized config accepted (default 64 MiB)")
    p.add_argument("--standby", action="store_true",
                   help="wait for the running publisher to exit, then take over")
    p.add_argument("--start-without-source", action="store_true",
                   help="if a source is missing, down or invalid at start, serve the last "
                        "good version until it is back")
    rollout = p.add_argument_group(
        "rollout", "roll each change out to a few canary workers first, then promote it to "
                   "all or roll it back by their health (docs/rollout.md); the options "
                   "below --canary need it")
    rollout.add_argument("--canary", type=_rollout_size, metavar="N|P%",
                         help="workers that get a change first: a number, or a share like 10%%")
    rollout.add_argument("--bake", type=duration, metavar="DURATION",
                         help="how long each step runs before it is judged (default 60s)")
    rollout.add_argument("--steps", type=_rollout_steps, metavar="P%,...",
                         help="further steps after the canaries, each a number or a share "
                              "(25%%,50%%: then a quarter, half, all)")
    rollout.add_argument("--min-requests", type=_whole_number, metavar="N",
                         help="requests the canaries must serve before a step is judged "
                              "healthy (default 50; 0: time alone decides)")
    rollout.add_argument("--max-failure-increase", type=_failure_increase, metavar="F",
                         help="roll back when the canaries' failure ratio exceeds the other "
                              "workers' by more than F: 0.05 or 5%% (the default)")


#: The options of ``publish`` that shape a rollout, beside ``--canary``.
_ROLLOUT_OPTIONS: Final = {"bake": ("--bake", "bake_s"), "steps": ("--steps", "steps"),
                           "min_requests": ("--min-requests", "min_requests"),
                           "max_failure_increase": ("--max-failure-increase",
                                                    "max_failure_increase")}


def _rollout_size(text: str) -> int | str:
    """A number of workers, or a share ``P%``, as ``Rollout`` takes it (an argparse type)."""
    try:
        return Rollout(canary=text).canary
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of workers (1, 2, ...) or a share of them "
            "(10%, up to 100%)") from None


def _rollout_steps(text: str) -> tuple[int | str, ...]:
    """``25%,50%`` (or ``2,4``): the steps after the canaries."""
    sizes = [part.strip() for part in text.split(",")]
    if not all(sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: write the steps comma-separated, "
                                          "each a number of workers or a share (25%,50%)")
    return tuple(_rollout_size(size) for size in sizes)


def _whole_number(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _failure_increase(text: str) -> float:
    """``0.05`` or ``5%``: a share between 0 and 1."""
    body = text.strip()
    try:
        value = float(body[:-1]) / 100 if body.endswith("%") else float(body)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:  # also NaN
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a share between 0 and 1 (0.05) or a percentage (5%)")
    return value


def rollout_policy(args: argparse.Namespace) -> Rollout | None:
    """The ``Rollout`` that ``publish``'s options describe, or None without ``--canary``.

    Raises ``argparse.ArgumentTypeError`` (a usage error) for an option that
    shapes a rollout given without ``--canary``.
    """
    given = {key: getattr(args, key) for key in _ROLLOUT_OPTIONS
             if getattr(args, key) is not None}
    if args.canary is None:
        if given:
            named = ", ".join(_ROLLOUT_OPTIONS[key][0] for key in given)
            raise argparse.ArgumentTypeError(
                f"{named} shape{'s' if len(given) == 1 else ''} a rollout, which starts "
                "with canaries: add --canary N (or a share, --canary 10%), or leave "
                f"{'it' if len(given) == 1 else 'them'} out")
        return None
    try:
        return Rollout(canary=args.canary,
                       **{_ROLLOUT_OPTIONS[key][1]: value for key, value in given.items()})
    except ValueError as exc:  # each option was checked alone: a safety net
        raise argparse.ArgumentTypeError(f"rollout: {exc}") from None


def _rollout_command_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("decision", choices=("promote", "abort"),
                   help="promote: every worker gets the candidate; abort: every worker gets "
                        "the stable content again, as a new generation")
    p.add_argument("--timeout", type=duration, default=DEFAULT_REPLY_TIMEOUT_S,
                   metavar="DURATION", help="how long to wait for the running publisher "
                                            "(default 10s; 0: do not wait)")
    p.add_argument("--json", action="store_true", help="machine-readable output (JSON)")


def _check_publish(
    parser: argparse.ArgumentParser
) -> Callable[[argparse.Namespace], None]:
    """``publish``'s checks across options, as usage errors of its parser (exit 2)."""
    def check(args: argparse.Namespace) -> None:
        try:
            args.rollout = rollout_policy(args)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    return check


def _quiet_on_closed_pipe() -> None:
    """The reader of our output went away: it had what it wanted.

    Quiet, as Unix tools are; stdout goes to /dev/null so that the
    interpreter's final flush cannot fail again.
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class _Version(argparse.Action):
    """``--version``: the version, then a line on the C speedups (argparse's own
    version action rewraps its text into one line)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from shmconf import _fastpath

        try:
            sys.stdout.write(f"shmconf {__version__}\nC speedups: {_fastpath.state}\n")
            sys.stdout.flush()
        except BrokenPipeError:  # `shmconf --version | head -0`
            _quiet_on_closed_pipe()
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmconf",
        description="Publish one validated config to every worker process on this host.",
        epilog="Durations are seconds (5, 0.5) or a number with a unit (100ms, 2s, 1m). "
               "Exit status: 0 done, 1 failed (the message says why), 2 usage.",
    )
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show shmconf's version and whether its C speedups are on, "
                             "then exit")
    parser.add_argument("--runtime-dir", metavar="DIR",
                        help="lock and state directory (default: $SHMCONF_RUNTIME_DIR, "
                             "$XDG_RUNTIME_DIR/shmconf, /tmp/shmconf-UID)")
    parser.add_argument("--trusted-owner", metavar="USER",
                        help="also trust segments of this user (name or uid): a publisher "
                             "that runs as another user, e.g. a service's")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], text: str,
            named: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        if named:
            p.add_argument("name", help="the config's name (what workers attach() to)")
        p.set_defaults(func=func)
        return p

    def json_option(p: Any) -> None:  # a parser or a group
        p.add_argument("--json", action="store_true", help="machine-readable output (JSON)")

    def sources(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", action="append", required=True, metavar="FILE",
                       help="a source: a .json, .yaml, .toml or .env file, or an etcd:// "
                            "URL; repeatable, later ones win")
        p.add_argument("--model", metavar="pkg.mod:Class",
                       help="the pydantic model every version must validate against")
        p.add_argument("--env-prefix", metavar="PREFIX",
                       help="apply PREFIX* environment variables over the sources "
                            "(PREFIX_A__B=value sets a.b)")

    p = add("publish", cmd_publish, "publish files and keep them published until SIGTERM")
    sources(p)
    _publish_options(p)
    p.set_defaults(check=_check_publish(p))

    p = add("validate", cmd_validate,
            "load, merge and validate sources as the publisher would; publish nothing",
            named=False)
    sources(p)
    out = p.add_mutually_exclusive_group()
    json_option(out)
    out.add_argument("--print", action="store_true",
                     help="print the merged config (secrets redacted) with the source "
                          "that set each key")

    p = add("status", cmd_status, "generation, age, digest, sources, publisher and readers")
    json_option(p)
    p.add_argument("--wait-for", type=int, metavar="GEN",
                   help="exit 0 once every live reader holds GEN or later")
    p.add_argument("--timeout", type=duration, default=30.0, metavar="DURATION",
                   help="how long --wait-for waits (default 30s)")

    p = add("show", cmd_show, "the live config (secrets redacted)")
    p.add_argument("--path", metavar="a.b", help="show only this subtree")
    json_option(p)

    p = add("history", cmd_history, "the kept versions, one per line")
    json_option(p)

    p = add("diff", cmd_diff, "changed paths between two kept generations")
    p.add_argument("a", type=int, metavar="A", help="the older generation")
    p.add_argument("b", type=int, metavar="B", help="the newer generation")
    json_option(p)

    p = add("rollback", cmd_rollback, "publish a kept version again as a new generation")
    p.add_argument("--to", type=int, metavar="GEN", help="default: the version before the live one")
    p.add_argument("--timeout", type=duration, default=DEFAULT_REPLY_TIMEOUT_S,
                   metavar="DURATION", help="how long to wait for the running publisher "
                                            "(default 10s; 0: do not wait)")

    _rollout_command_options(add(
        "rollout", cmd_rollout,
        "promote the running rollout's candidate to every worker now, or abort it"))

    p = add("reload", cmd_reload, "ask the running publisher to reload now")
    p.add_argument("--timeout", type=duration, default=DEFAULT_REPLY_TIMEOUT_S,
                   metavar="DURATION", help="how long to wait for the publisher's answer "
                                            "(default 10s)")

    p = add("unlink", cmd_unlink, "remove the segments and the lock file")
    p.add_argument("--force", action="store_true", help="even while a publisher runs")
    p.add_argument("--purge", action="store_true", help="also remove the history")
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = build_parser()
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    if check is not None:
        check(args)  # checks across options: usage errors, exit 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.runtime_dir:
        os.environ["SHMCONF_RUNTIME_DIR"] = args.runtime_dir
    try:
        args.trusted = _trusted_uids(args.trusted_owner)
        code = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:  # `shmconf history NAME | head -1`
        _quiet_on_closed_pipe()
        code = EXIT_OK
    except ShmconfError as exc:
        print(f"shmconf {args.command}: error: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    except ValueError as exc:  # a bad --group, a bad number in a file name
        print(f"shmconf {args.command}: error: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    except KeyboardInterrupt:
        code = EXIT_FAILED
    sys.exit(code)
