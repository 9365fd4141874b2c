"""Plugins installed for a test the way pip installs them: a module and a dist-info folder with
its entry points, in a folder put on sys.path (and on PYTHONPATH for `sup` subprocesses)."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

# Each: entry point name -> (module name, its source, the entry point's object).
PLUGINS: dict[str, tuple[str, str, str]] = {
    "recorder": (
        "sup_test_recorder",
        """
        import asyncio
        from sup.plugins.hookspecs import hookimpl

        class Recorder:
            def __init__(self, settings):
                self.settings = settings
                self.events = []
                self.started = self.stopped = False

            @hookimpl
            async def startup(self):
                self.started = True

            @hookimpl
            def shutdown(self):
                self.stopped = True

            @hookimpl
            async def user_registered(self, event):
                self.events.append(event)

            @hookimpl
            def device_added(self, event):
                self.events.append(event)

            @hookimpl
            async def message_sent(self, event):
                await asyncio.sleep(0)
                self.events.append(event)
        """,
        "sup_test_recorder:Recorder",
    ),
    "crashing": (
        "sup_test_crashing",
        """
        from sup.plugins.hookspecs import hookimpl

        @hookimpl
        def message_sent(event):
            raise RuntimeError("this observer always fails")

        @hookimpl
        def user_registered(event):
            raise RuntimeError("this observer always fails")
        """,
        "sup_test_crashing",
    ),
    "broken": ("sup_test_broken", "import a_module_that_is_not_there\n", "sup_test_broken:Plugin"),
    "grumpy": (
        "sup_test_grumpy",
        """
        class Grumpy:
            def __init__(self, settings):
                raise ValueError("I refuse to start")
        """,
        "sup_test_grumpy:Grumpy",
    ),
    "typo": (
        "sup_test_typo",
        """
        from sup.plugins.hookspecs import hookimpl

        @hookimpl
        def mesage_sent(event):
            pass
        """,
        "sup_test_typo",
    ),
    "late": (
        "sup_test_late",
        """
        from sup.plugins.hookspecs import hookimpl

        class Late:
            def __init__(self, settings):
                pass

            @hookimpl
            async def startup(self):
                raise ConnectionError("no answer from the webhook")
        """,
        "sup_test_late:Late",
    ),
}


def install(where: Path) -> Path:
    """Write the fake plugins into `where`, with a dist-info declaring their entry points."""
    where.mkdir(parents=True, exist_ok=True)
    lines = ["[sup.plugins]"]
    for name, (module, source, target) in PLUGINS.items():
        (where / f"{module}.py").write_text(textwrap.dedent(source))
        lines.append(f"{name} = {target}")
    dist = where / "sup_test_plugins-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sup-test-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return where


class OnPath:
    """The folder on sys.path while in use; the fake modules forgotten afterwards."""

    def __init__(self, where: Path) -> None:
        self.where = str(where)

    def __enter__(self) -> OnPath:
        sys.path.insert(0, self.where)
        importlib.invalidate_caches()
        return self

    def __exit__(self, *exc: object) -> None:
        sys.path.remove(self.where)
        for _, (module, _, _) in PLUGINS.items():
            sys.modules.pop(module, None)
        importlib.invalidate_caches()
