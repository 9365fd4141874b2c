"""The `sup` command: run, init, config check, migrate, admin, backup, migrate-backend, doctor."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

from sup import __version__
from sup.config import Config, ConfigError, example_toml, load_config

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def _fail(message: str, status: int = EXIT_FAILURE) -> int:
    print(message, file=sys.stderr)
    return status


def _config_path(args: argparse.Namespace) -> str | None:
    path = getattr(args, "config", None) or os.environ.get("SUP_CONFIG")
    if path:
        return path
    return "sup.toml" if Path("sup.toml").is_file() else None


def _load(args: argparse.Namespace) -> Config:
    environ = dict(os.environ)
    for flag, name in (("data_dir", "SUP_DATA_DIR"), ("host", "SUP_HOST"), ("port", "SUP_PORT")):
        value = getattr(args, flag, None)
        if value is not None:
            environ[name] = str(value)
    return load_config(_config_path(args), environ)


def cmd_run(args: argparse.Namespace) -> int:
    from sup.preflight import missing_drivers, plugin_problem
    from sup.server import run

    config = _load(args)
    # Before anything opens: a missing extra is one line, not a traceback from deep in startup.
    missing = missing_drivers(config)
    if missing:
        raise ConfigError("; ".join(missing.values()))
    broken = plugin_problem(config)
    if broken:
        raise ConfigError(broken)
    run(config)
    return 0


# sup.toml may hold passwords: readable by the service's group (chown root:sup), never by others.
CONFIG_FILE_MODE = 0o640


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        return _fail(f"{path} exists; use --force to overwrite it")
    # Created with the mode (never world-readable, whatever the umask); an existing file keeps its
    # owner and group, and loses any permission beyond 0640.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, CONFIG_FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        mode = os.fstat(fd).st_mode & 0o777
        if mode & ~CONFIG_FILE_MODE:
            os.fchmod(fd, mode & CONFIG_FILE_MODE)
        fh.write(example_toml())
    print(f"wrote {path}; edit it, then: sup config check {path}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from sup.preflight import check_services, missing_drivers, plugin_problem

    config = load_config(args.path or _config_path(args))
    missing = missing_drivers(config)
    for line in missing.values():
        print(f"sup: {line}", file=sys.stderr)
    broken = plugin_problem(config)
    if broken:
        print(f"sup: {broken}", file=sys.stderr)
        missing["plugins"] = broken
    checks = []
    if not args.no_connect:
        skip = frozenset(setting.split(".", 1)[0] for setting in missing)
        checks = asyncio.run(check_services(config, args.timeout, skip))
    failed = [check for check in checks if not check.ok]
    for check in failed:
        print(f"sup: {check.line()}", file=sys.stderr)
    if missing:
        return EXIT_CONFIG  # as at `sup run`: this install cannot serve this configuration
    if failed:
        return EXIT_FAILURE
    print(
        f"configuration is valid (database: {config.database_url.split(':', 1)[0]}, "
        f"listen: {config.server.host}:{config.server.port})"
    )
    for check in checks:
        print(f"  {check.line()}")
    return 0


async def _with_database(config: Config, work: Callable[[Any], Awaitable[int]]) -> int:
    from sup.app import open_configured_database

    db = await open_configured_database(config)
    try:
        return await work(db)
    finally:
        await db.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    from sup.clock import Clock
    from sup.db import migrations

    config = _load(args)

    if args.action == "status":
        from sup.preflight import sqlite_missing

        missing = sqlite_missing(config)
        if missing is not None:  # `status` only reads: it must not create the database it reports on
            pending = migrations.discover()
            print(f"no database yet at {missing}: {len(pending)} migrations pending")
            for migration in pending:
                print(f"pending  {migration.version:04d}_{migration.name}")
            return 0

    async def work(db: Any) -> int:
        if args.action == "status":
            state = await migrations.status(db)
            known = {m.version: m for m in migrations.discover()}
            for version in state.applied:
                name = known[version].name if version in known else "(unknown to this version)"
                print(f"applied  {version:04d}_{name}")
            for migration in state.pending:
                print(f"pending  {migration.version:04d}_{migration.name}")
            return 0
        if args.action == "up":
            done = await migrations.migrate_up(db, Clock().now_ms(), progress=print)
            verb = "applied"
        else:
            done = await migrations.migrate_down(db, args.steps)
            verb = "reverted"
        for migration in done:
            print(f"{verb} {migration.version:04d}_{migration.name}")
        if not done:
            print("nothing to do")
        return 0

    return asyncio.run(_with_database(config, work))


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("passwords differ")
    return first


def cmd_admin(args: argparse.Namespace) -> int:
    from sup.app import build_admin_accounts, build_admin_service, build_hasher, load_configured_plugins, prepare_schema
    from sup.clock import Clock

    config = _load(args)
    password = _read_password(args) if args.action in {"create-user", "reset-password"} else ""
    email = getattr(args, "email", None)
    if email and args.count != 1:
        raise SystemExit("sup admin invite: --email sends one code: leave out --count")

    async def work(db: Any) -> int:
        clock = Clock()
        await prepare_schema(config, db, clock)
        hooks = load_configured_plugins(config, clock)  # plugins observe what sup admin does too
        await hooks.start()
        hasher = build_hasher(config)
        try:
            accounts = build_admin_accounts(config, db, hasher, clock, hooks)
            if args.action == "create-user":
                user = await accounts.create_user(args.username, password, is_admin=args.admin)
                print(f"created user {user.username} ({user.id})")
            elif args.action == "set-admin":
                admin = build_admin_service(config, db, clock)
                user = await admin.set_admin(None, await admin.find_user_id(args.username), not args.off)
                print(f"{user.username} is {'now' if user.is_admin else 'no longer'} an administrator")
            elif args.action == "reset-password":
                await accounts.reset_password(args.username, password)
                print(f"password of {args.username} reset; all of its devices were logged out")
            else:
                ttl = None if args.never_expires else round(args.expires_days * 86400)
                if email:
                    return await _mail_invite(config, hooks, accounts, email, args.uses, ttl, clock)
                for _ in range(args.count):
                    print(await accounts.create_invite(max_uses=args.uses, ttl_seconds=ttl))
        finally:
            hasher.close()
            await hooks.close()
        return 0

    return asyncio.run(_with_database(config, work))


async def _mail_invite(
    config: Config, hooks: Any, accounts: Any, address: str, uses: int, ttl: int | None, clock: Any
) -> int:
    from sup.domain.emails import check_email, deliver, invite_mail, not_configured

    if not hooks.implements("send_email"):
        raise not_configured()
    check_email(address)  # a malformed address is refused before a code exists
    expires_at = None if ttl is None else clock.now_ms() + ttl * 1000
    code = await accounts.create_invite(max_uses=uses, ttl_seconds=ttl)
    await deliver(hooks, invite_mail(address, code, expires_at, config.server.public_url))
    print(f"invite code {code} mailed to {address}")
    return 0


def cmd_calls(args: argparse.Namespace) -> int:
    from sup.app import turn_secret

    config = _load(args)
    print(turn_secret(config))  # the one action: turn-secret
    return 0


def _report(outcome: Any, done: str) -> int:
    """A backup command's result: facts on stdout, warnings and problems on stderr, one line each."""
    for line in outcome.warnings:
        print(f"sup: warning: {line}", file=sys.stderr)
    for line in outcome.problems:
        print(f"sup: problem: {line}", file=sys.stderr)
    print(done if not outcome.problems else f"{done}, with {len(outcome.problems)} problem(s)")
    for line in outcome.facts:
        print(f"  {line}")
    return EXIT_FAILURE if outcome.problems else 0


def cmd_backup(args: argparse.Namespace) -> int:
    from sup.ops import backup
    from sup.ops.progress import Progress
    from sup.ops.tables import OpsError

    config = _load(args)
    progress = Progress.for_cli()
    try:
        if args.action == "create":
            path = _config_path(args)
            outcome = asyncio.run(
                backup.create_backup(
                    config,
                    Path(args.path),
                    archive=args.archive,
                    include_s3_objects=args.include_s3_objects,
                    config_file=Path(path) if path else None,
                    progress=progress,
                )
            )
            return _report(outcome, f"backup written to {outcome.path}")
        if args.action == "verify":
            outcome = asyncio.run(
                backup.verify_backup(
                    Path(args.path), config, scratch_database_url=args.scratch_database_url, progress=progress
                )
            )
            return _report(outcome, f"backup {outcome.path} verified")
        outcome = asyncio.run(backup.restore_backup(Path(args.path), config, force=args.force, progress=progress))
        return _report(outcome, f"backup {outcome.path} restored; start SUP")
    except OpsError as exc:
        return _fail(f"sup backup {args.action}: {exc}")


def cmd_migrate_backend(args: argparse.Namespace) -> int:
    from sup.ops.migrate_backend import migrate_backend
    from sup.ops.progress import Progress
    from sup.ops.tables import OpsError

    config = _load(args)
    try:
        report = asyncio.run(
            migrate_backend(config, args.to, final=args.final, batch=args.batch_rows, progress=Progress.for_cli())
        )
    except OpsError as exc:
        return _fail(f"sup migrate-backend: {exc}")
    for line in report.problems:
        print(f"sup: problem: {line}", file=sys.stderr)
    print(f"{'final pass' if args.final else 'copy'} done in {report.seconds:.1f} s")
    for line in report.lines:
        print(line)
    return EXIT_FAILURE if report.problems else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from sup.ops.doctor import Finding, diagnose

    path = _config_path(args)
    try:
        config = _load(args)
    except ConfigError as exc:
        print(Finding("problem", "config", str(exc), "fix the setting it names").line())
        return EXIT_FAILURE
    findings = asyncio.run(diagnose(config, path, args.timeout))
    for finding in findings:
        if finding.level != "ok" or not args.quiet:
            print(finding.line())
    problems = sum(1 for f in findings if f.level == "problem")
    warnings = sum(1 for f in findings if f.level == "warning")
    if not args.quiet or problems or warnings:
        print(f"{problems} problem(s), {warnings} warning(s)")
    return EXIT_FAILURE if problems else 0


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (`sup admin invite: --uses: ...`), exit code 2 as argparse's."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


# An invite that lapses before it can be handed over is a mistake; one good for years is a
# standing key to the server (--never-expires says so on purpose).
INVITE_MIN_DAYS = 1 / 1440  # one minute
INVITE_MAX_DAYS = 365
INVITE_MAX_USES = 10_000
INVITE_MAX_COUNT = 1000


def _invite_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not INVITE_MIN_DAYS <= days <= INVITE_MAX_DAYS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"must be from one minute ({INVITE_MIN_DAYS:.6f}) to {INVITE_MAX_DAYS} days, got {text}"
            + ("; for an invite that never expires, use --never-expires" if days == 0 else "")
        )
    return days


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0.1 <= seconds <= 600:
        raise argparse.ArgumentTypeError(f"must be from 0.1 to 600 seconds, got {text}")
    return seconds


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="sup", description="SUP: a self-hosted secure messenger server.")
    top.add_argument("--version", action="version", version=f"sup {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", help="path to sup.toml (default: $SUP_CONFIG, else ./sup.toml if present)")
        p.add_argument("--data-dir", help="data directory (default ./sup-data)")
        return p

    run = with_config(sub.add_parser("run", help="serve SUP"))
    run.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (default 8080)")
    run.set_defaults(func=cmd_run)

    init = sub.add_parser("init", help="write a commented sup.toml")
    init.add_argument("path", nargs="?", default="sup.toml")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=cmd_init)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser(
        "check", help="validate a sup.toml (and SUP_* variables), then reach the database, Redis and S3 it names"
    )
    check.add_argument("path", nargs="?")
    check.add_argument(
        "--timeout",
        type=_seconds,
        default=5.0,
        help="seconds each service gets to answer (default 5)",
    )
    check.add_argument("--no-connect", action="store_true", help="check the file and the drivers only")
    check.set_defaults(func=cmd_config_check)

    migrate = with_config(sub.add_parser("migrate", help="database schema migrations"))
    migrate.add_argument("action", choices=["up", "down", "status"])
    migrate.add_argument(
        "--steps",
        type=_int_between(1, 10_000),
        default=1,
        help="migrations to revert with `down`, from the newest (default 1)",
    )
    migrate.set_defaults(func=cmd_migrate)

    admin = sub.add_parser("admin", help="administration")
    admin_sub = admin.add_subparsers(dest="action", required=True)
    create = with_config(admin_sub.add_parser("create-user", help="create a user"))
    create.add_argument("username")
    create.add_argument("--admin", action="store_true", help="make the user a server administrator")
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    reset = with_config(admin_sub.add_parser("reset-password", help="set a user's password, log out its devices"))
    reset.add_argument("username")
    reset.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    invite = with_config(admin_sub.add_parser("invite", help="issue invite codes"))
    invite.add_argument(
        "--uses",
        type=_int_between(1, INVITE_MAX_USES),
        default=1,
        help=f"registrations per code, 1 to {INVITE_MAX_USES} (default 1)",
    )
    lifetime = invite.add_mutually_exclusive_group()
    lifetime.add_argument(
        "--expires-days",
        type=_invite_days,
        default=7.0,
        help=f"days until it expires, one minute (0.0007) to {INVITE_MAX_DAYS} (default 7)",
    )
    lifetime.add_argument("--never-expires", action="store_true", help="a code that is good until it is used up")
    invite.add_argument("--email", metavar="ADDRESS", help="mail the code to this address (needs [email] set up)")
    invite.add_argument(
        "--count",
        type=_int_between(1, INVITE_MAX_COUNT),
        default=1,
        help=f"how many codes, 1 to {INVITE_MAX_COUNT} (default 1)",
    )
    promote = with_config(admin_sub.add_parser("set-admin", help="make an existing user an administrator"))
    promote.add_argument("username")
    promote.add_argument("--off", action="store_true", help="make the user an administrator no longer")
    for p in (create, reset, invite, promote):
        p.set_defaults(func=cmd_admin)

    calls = sub.add_parser("calls", help="calls: what coturn needs from SUP")
    calls_sub = calls.add_subparsers(dest="action", required=True)
    secret = with_config(
        calls_sub.add_parser("turn-secret", help="print the TURN secret, for coturn's static-auth-secret")
    )
    secret.set_defaults(func=cmd_calls)

    backup = sub.add_parser("backup", help="consistent online backups: create, verify, restore")
    backup_sub = backup.add_subparsers(dest="action", required=True)
    create_backup = with_config(
        backup_sub.add_parser("create", help="back up the database, the blobs it names and the secrets, while SUP runs")
    )
    create_backup.add_argument("path", help="a new (or empty) directory, or the .tar file with --archive")
    create_backup.add_argument("--archive", action="store_true", help="write one .tar file instead of a directory")
    create_backup.add_argument(
        "--include-s3-objects", action="store_true", help="with S3 storage, copy the objects too (default: list them)"
    )
    verify_backup = with_config(
        backup_sub.add_parser("verify", help="check every file, restore the database into a scratch copy, count rows")
    )
    verify_backup.add_argument("path", help="a backup directory or .tar")
    verify_backup.add_argument(
        "--scratch-database-url",
        help="Postgres backups: the server to restore into a scratch database (default: the configured one)",
    )
    restore_backup = with_config(
        backup_sub.add_parser("restore", help="restore into the configured database, blob store and data directory")
    )
    restore_backup.add_argument("path", help="a backup directory or .tar")
    restore_backup.add_argument(
        "--force", action="store_true", help="replace a database that is not empty, or a different secrets.json"
    )
    for p in (create_backup, verify_backup, restore_backup):
        p.set_defaults(func=cmd_backup)

    move = with_config(
        sub.add_parser(
            "migrate-backend",
            help="copy a live SQLite database to Postgres, or disk blobs to S3; --final (SUP stopped) finishes",
        )
    )
    move.add_argument("--to", required=True, help="postgresql://user:pass@host/db or s3://bucket/optional/prefix")
    move.add_argument(
        "--final",
        action="store_true",
        help="with SUP stopped: copy what changed since, compare every row (or blob), make the target ready",
    )
    move.add_argument(
        "--batch-rows",
        type=_int_between(1, 1_000_000),
        default=5000,
        help="rows per batch (each commits with its resume point; default 5000)",
    )
    move.set_defaults(func=cmd_migrate_backend)

    doctor = with_config(
        sub.add_parser("doctor", help="check this install end to end and say what to fix, one line per finding")
    )
    doctor.add_argument("--timeout", type=_seconds, default=10.0, help="seconds each service gets (default 10)")
    doctor.add_argument("--quiet", "-q", action="store_true", help="print only warnings and problems")
    doctor.set_defaults(func=cmd_doctor)

    from sup.client.terminal import add_arguments, cmd_chat  # standard library only until it runs

    chat = sub.add_parser("chat", help="end-to-end encrypted terminal chat (a client of a SUP server)")
    add_arguments(chat)
    chat.set_defaults(func=cmd_chat)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from sup.blobs.store import BlobError
    from sup.db.database import DatabaseError
    from sup.errors import DomainError

    try:
        return args.func(args)
    except ConfigError as exc:
        return _fail(f"sup: configuration error: {exc}", EXIT_CONFIG)
    except DatabaseError as exc:
        return _fail(f"sup: database error: {exc}")
    except BlobError as exc:
        return _fail(f"sup: blob storage error: {exc}")
    except DomainError as exc:
        return _fail(f"sup: {exc.detail}")
    except OSError as exc:
        return _fail(f"sup: {exc}")
    except KeyboardInterrupt:
        return 130
