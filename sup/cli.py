"""The `sup` command: run, init, config check, migrate, admin."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sup import __version__
from sup.config import Config, ConfigError, example_toml, load_config

EXIT_CONFIG = 2
EXIT_FAILURE = 1


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
    from sup.server import run

    run(_load(args))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} exists; use --force to overwrite it", file=sys.stderr)
        return EXIT_FAILURE
    path.write_text(example_toml())
    print(f"wrote {path}; edit it, then: sup config check {path}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.path or _config_path(args))
    print(
        f"configuration is valid (database: {config.database_url.split(':', 1)[0]}, "
        f"listen: {config.server.host}:{config.server.port})"
    )
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
            done = await migrations.migrate_up(db, Clock().now_ms())
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
    from sup.app import build_admin_accounts, build_hasher, prepare_schema
    from sup.clock import Clock

    config = _load(args)
    password = _read_password(args) if args.action in {"create-user", "reset-password"} else ""

    async def work(db: Any) -> int:
        clock = Clock()
        await prepare_schema(config, db, clock)
        hasher = build_hasher(config)
        try:
            accounts = build_admin_accounts(config, db, hasher, clock)
            if args.action == "create-user":
                user = await accounts.create_user(args.username, password, is_admin=args.admin)
                print(f"created user {user.username} ({user.id})")
            elif args.action == "reset-password":
                await accounts.reset_password(args.username, password)
                print(f"password of {args.username} reset; all of its devices were logged out")
            else:
                ttl = int(args.expires_days * 86400) if args.expires_days else None
                for _ in range(args.count):
                    print(await accounts.create_invite(max_uses=args.uses, ttl_seconds=ttl))
        finally:
            hasher.close()
        return 0

    return asyncio.run(_with_database(config, work))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="sup", description="SUP: a self-hosted secure messenger server.")
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
    check = config_sub.add_parser("check", help="validate a sup.toml (and SUP_* variables)")
    check.add_argument("path", nargs="?")
    check.set_defaults(func=cmd_config_check)

    migrate = with_config(sub.add_parser("migrate", help="database schema migrations"))
    migrate.add_argument("action", choices=["up", "down", "status"])
    migrate.add_argument("--steps", type=int, default=1, help="migrations to revert with `down` (default 1)")
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
    invite.add_argument("--uses", type=int, default=1, help="registrations per code (default 1)")
    invite.add_argument("--expires-days", type=float, default=7, help="days until it expires (0: never)")
    invite.add_argument("--count", type=int, default=1, help="how many codes")
    for p in (create, reset, invite):
        p.set_defaults(func=cmd_admin)

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
        print(f"sup: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DatabaseError as exc:
        print(f"sup: database error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BlobError as exc:
        print(f"sup: blob storage error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except DomainError as exc:
        print(f"sup: {exc.detail}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"sup: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
