"""Loading plugins and calling their hooks.

A plugin is found through its entry point in the group `sup.plugins`, and loaded only when its
name is in `plugins.enabled`. The entry point names either a module of hook functions, or a
factory (a class, usually) that takes the plugin's settings, the `[plugins.<name>]` table, and
returns an object whose methods are the hooks. Whatever goes wrong while loading (not installed,
an import error, a missing setting, an exception in the factory, a hook that does not exist) is a
`PluginError` whose message is one line naming the plugin: `sup run` and `sup config check` print
it and stop.

Built-in features (the SMTP mailer, TURN credentials) are plugins on the same hooks, registered
here without an entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

import msgspec
import pluggy

from sup.config import ConfigError
from sup.plugins import hookspecs

GROUP = "sup.plugins"
log = logging.getLogger("sup.plugins")

S = TypeVar("S")


class PluginError(ConfigError):
    """A plugin cannot be loaded or set up; the message is one line that names it."""


@dataclass(frozen=True)
class Loaded:
    name: str
    source: str  # "entry point livekit = sup_livekit:LiveKitPlugin", or "built in"
    plugin: object


def read_settings(settings_type: type[S], settings: Mapping[str, Any]) -> S:
    """A plugin's settings as its typed struct; a missing, unknown or wrong one is one line naming the key.

    Declare the struct with `forbid_unknown_fields=True`, so that a typo is refused, not ignored.
    """
    try:
        return msgspec.convert(dict(settings), settings_type)
    except msgspec.ValidationError as exc:
        message = str(exc)
        key = message.rsplit("`$.", 1)[1].rstrip("`") if "`$." in message else ""
        message = message.split(" - at `$", 1)[0]
        if message.startswith("Object missing required field"):
            return _raise(f"missing setting {message.split('`')[1]}")
        if message.startswith("Object contains unknown field"):
            return _raise(f"unknown setting {message.split('`')[1]}")
        return _raise(f"setting {key}: {message}" if key else message)


def _raise(message: str) -> Any:
    raise PluginError(message)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def installed() -> dict[str, EntryPoint]:
    """The plugins installed in this Python environment, by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_plugins(enabled: Iterable[str], settings: Mapping[str, Mapping[str, Any]], builtins=()) -> Hooks:
    """Register the built-in plugins, then load each enabled one from its entry point; raise PluginError."""
    manager = _manager()
    loaded: list[Loaded] = []
    for name, plugin in builtins:
        _register(manager, f"builtin:{name}", plugin)
        loaded.append(Loaded(name, "built in", plugin))
    available = installed()
    for name in enabled:
        entry = available.get(name)
        if entry is None:
            known = ", ".join(sorted(available)) or "none"
            raise PluginError(
                f"plugin {name}: not installed (no entry point {name!r} in the group {GROUP}; installed: {known})"
            )
        plugin = _instantiate(name, entry, settings.get(name, {}))
        _register(manager, name, plugin, prefix=f"plugin {name}: ")
        loaded.append(Loaded(name, f"entry point {name} = {entry.value}", plugin))
    return Hooks(manager, loaded)


def _instantiate(name: str, entry: EntryPoint, settings: Mapping[str, Any]) -> object:
    try:
        target = entry.load()
    except Exception as exc:
        raise PluginError(f"plugin {name}: cannot import {entry.value}: {one_line(exc)}") from exc
    if isinstance(target, types.ModuleType):
        if settings:
            raise PluginError(f"plugin {name}: takes no settings, but [plugins.{name}] has {', '.join(settings)}")
        return target
    if not callable(target):
        raise PluginError(f"plugin {name}: {entry.value} is neither a module nor a factory of plugins")
    try:
        return target(dict(settings))
    except PluginError as exc:
        raise PluginError(f"plugin {name}: {exc}") from exc
    except Exception as exc:
        raise PluginError(f"plugin {name}: setup failed: {one_line(exc)}") from exc


def _register(manager: pluggy.PluginManager, name: str, plugin: object, prefix: str = "") -> None:
    try:
        manager.register(plugin, name=name)
        manager.check_pending()  # a hook the specification does not have: a typo, or a newer SUP's hook
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{prefix}{one_line(exc)}") from exc


class Hooks:
    """The loaded plugins, as the services call them.

    Observer hooks run in tasks this object owns, and `close` waits for them (bounded), so an
    event told just before shutdown is not dropped halfway.
    """

    MAX_PENDING = 1000  # observers that hang must not grow memory without bound

    def __init__(self, manager: pluggy.PluginManager, loaded: list[Loaded]) -> None:
        self._manager = manager
        self.loaded = tuple(loaded)
        self._pending: set[asyncio.Task[None]] = set()

    @classmethod
    def none(cls) -> Hooks:
        return cls(_manager(), [])

    def names(self) -> list[str]:
        return [item.name for item in self.loaded]

    def implements(self, hook: str) -> bool:
        return bool(self._impls(hook))

    def _impls(self, hook: str) -> list[Any]:
        # pluggy calls the last registered first (and honours tryfirst / trylast): so do we.
        return list(reversed(getattr(self._manager.hook, hook).get_hookimpls()))

    async def first(self, hook: str, **kwargs: Any) -> Any:
        """Ask each implementation in turn; the first answer that is not None, else None."""
        for impl in self._impls(hook):
            answer = await _maybe(impl.function(**{k: kwargs[k] for k in impl.argnames}))
            if answer is not None:
                return answer
        return None

    async def notify(self, hook: str, event: object) -> None:
        """Tell the observers of `hook` about `event`, in the background (queue it with tx.after_commit)."""
        impls = self._impls(hook)
        if not impls:
            return
        if len(self._pending) >= self.MAX_PENDING:
            log.warning("%d plugin observers still running: %s of %s not told", len(self._pending), hook, event)
            return
        task = asyncio.get_running_loop().create_task(self._observe(hook, impls, event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _observe(self, hook: str, impls: list[Any], event: object) -> None:
        for impl in impls:
            try:
                await _maybe(impl.function(**({"event": event} if impl.argnames else {})))
            except Exception:
                log.exception("plugin %s failed in %s", impl.plugin_name, hook)

    async def start(self) -> None:
        """Run every `startup` hook; a failure is a PluginError naming the plugin."""
        for impl in reversed(self._impls("startup")):  # in the order they were loaded
            try:
                await _maybe(impl.function())
            except Exception as exc:
                raise PluginError(f"plugin {_shown(impl.plugin_name)}: startup failed: {one_line(exc)}") from exc

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait for the observers still running (then cancel them), and run every `shutdown` hook."""
        if self._pending:
            _, late = await asyncio.wait(set(self._pending), timeout=timeout)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for impl in self._impls("shutdown"):
            try:
                await _maybe(impl.function())
            except Exception:
                log.exception("plugin %s failed in shutdown", impl.plugin_name)


def _shown(plugin_name: str) -> str:
    return plugin_name.removeprefix("builtin:")


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
