"""Plugins: found through entry points, loaded when enabled, told of events after commit; a broken one
stops `sup run` with one line that names it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sup.app import HOOKS
from sup.config import load_config
from sup.plugins.hookspecs import DeviceAdded, MessageSent, UserRegistered
from sup.plugins.host import Hooks, PluginError, installed, load_plugins
from tests.conftest import plain_group, say
from tests.fake_plugins import OnPath, install
from tests.processes import sup, sup_env


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Iterator[Path]:
    where = install(tmp_path_factory.mktemp("site"))
    with OnPath(where):
        yield where


def recorder(hooks: Hooks):
    return next(item.plugin for item in hooks.loaded if item.name == "recorder")


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "the plugin was not told in time"
        await asyncio.sleep(0.02)


async def test_observers_are_told_after_commit_without_content(server_factory, plugin_dir):
    server = await server_factory(SUP_PLUGINS_ENABLED="recorder,crashing", SUP_PLUGINS_RECORDER_GREETING="hi")
    hooks = server.app[HOOKS]
    plugin = recorder(hooks)
    assert plugin.started and plugin.settings == {"greeting": "hi"}  # from SUP_PLUGINS_RECORDER_GREETING
    api = server.api
    alice = await api.register()
    bob = await api.register()
    phone = await api.new_device(alice)
    chat_id = await plain_group(api, alice, bob)
    reply = await say(api, alice, chat_id, "the words stay in the chat")
    assert reply.status == 201  # the observer that raises changes nothing for the sender
    await until(lambda: any(isinstance(e, MessageSent) for e in plugin.events))

    registered = [e for e in plugin.events if isinstance(e, UserRegistered)]
    assert [(e.user_id, e.username) for e in registered] == [
        (alice.user_id, alice.username),
        (bob.user_id, bob.username),
    ]
    added = {(e.user_id, e.device_id) for e in plugin.events if isinstance(e, DeviceAdded)}
    assert added == {(alice.user_id, alice.device_id), (bob.user_id, bob.device_id), (alice.user_id, phone.device_id)}
    (sent,) = [e for e in plugin.events if isinstance(e, MessageSent)]
    assert sent.message_id == reply.body["id"] and sent.chat_id == chat_id and sent.seq == reply.body["seq"]
    assert (sent.sender_id, sent.sender_device_id, sent.recipient_ids) == (
        alice.user_id,
        alice.device_id,
        (bob.user_id,),
    )
    assert sent.chat_type == "group" and not sent.encrypted
    assert "the words" not in repr(sent)

    # What a rollback undid is never told: a taken username registers nobody.
    told = len(plugin.events)
    again = await api.post("/api/v1/auth/register", json={"username": alice.username, "password": "x" * 12})
    assert again.status == 409
    await asyncio.sleep(0.1)
    assert len(plugin.events) == told


async def test_the_shipped_plugin_is_an_entry_point():
    assert installed()["livekit"].value == "sup_livekit:LiveKitPlugin"


def test_only_enabled_plugins_are_loaded(plugin_dir):
    hooks = load_plugins([], {})
    assert hooks.names() == [] and not hooks.implements("message_sent")
    hooks = load_plugins(["recorder"], {"recorder": {"a": 1}, "grumpy": {"never": "read"}})
    assert hooks.names() == ["recorder"] and hooks.implements("message_sent")
    assert hooks.loaded[0].source == "entry point recorder = sup_test_recorder:Recorder"


@pytest.mark.parametrize(
    "enabled, settings, message",
    [
        (["nope"], {}, "plugin nope: not installed (no entry point 'nope' in the group sup.plugins"),
        (["broken"], {}, "plugin broken: cannot import sup_test_broken:Plugin: ModuleNotFoundError"),
        (["grumpy"], {}, "plugin grumpy: setup failed: ValueError: I refuse to start"),
        (["typo"], {}, "plugin typo: PluginValidationError: unknown hook 'mesage_sent'"),
        (
            ["crashing"],
            {"crashing": {"url": "x"}},
            "plugin crashing: takes no settings, but [plugins.crashing] has url",
        ),
        (
            ["livekit"],
            {"livekit": {"url": "wss://lk.example", "api_key": "k"}},
            "plugin livekit: missing setting api_secret",
        ),
        (
            ["livekit"],
            {"livekit": {"url": "wss://lk.example", "api_key": "k", "api_secret": "s" * 32, "ttl": 5}},
            "plugin livekit: unknown setting ttl",
        ),
        (
            ["livekit"],
            {"livekit": {"url": "wss://lk.example", "api_key": "k", "api_secret": "too short"}},
            "plugin livekit: setting api_secret: Expected `str` of length >= 32",
        ),
    ],
)
def test_a_broken_plugin_is_one_line_naming_it(plugin_dir, enabled, settings, message):
    with pytest.raises(PluginError) as info:
        load_plugins(enabled, settings)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


async def test_a_failing_startup_names_the_plugin(plugin_dir):
    hooks = load_plugins(["late"], {})
    with pytest.raises(PluginError) as info:
        await hooks.start()
    assert str(info.value) == "plugin late: startup failed: ConnectionError: no answer from the webhook"


def test_plugin_tables_and_variables_reach_the_settings(tmp_path: Path):
    path = tmp_path / "sup.toml"
    path.write_text('[plugins]\nenabled = ["livekit", "live"]\n[plugins.livekit]\nurl = "wss://a"\napi_key = "k"\n')
    config = load_config(path, {"SUP_PLUGINS_LIVEKIT_API_KEY": "from-env", "SUP_PLUGINS_LIVE_X": "1"})
    assert config.plugins.settings == {"livekit": {"url": "wss://a", "api_key": "from-env"}, "live": {"x": "1"}}
    with pytest.raises(Exception, match="SUP_PLUGINS_ELSEWHERE_URL: unknown setting"):
        load_config(path, {"SUP_PLUGINS_ELSEWHERE_URL": "x"})  # not an enabled plugin: a typo, said so


@pytest.mark.parametrize("command", [["run"], ["config", "check", "--no-connect"]])
async def test_sup_refuses_to_start_with_a_broken_plugin(tmp_path: Path, plugin_dir, command):
    env = sup_env(
        tmp_path / "data",
        SUP_PLUGINS_ENABLED="livekit",
        SUP_PLUGINS_LIVEKIT_URL="wss://lk.example",
        SUP_PLUGINS_LIVEKIT_API_KEY="key",
        PYTHONPATH=os.pathsep.join([str(plugin_dir), *sys.path]),
    )
    code, out, err = await sup(*command, env=env)
    assert code == 2, (out, err)
    said = "configuration error: " if command == ["run"] else ""
    assert err.strip().splitlines() == [f"sup: {said}plugin livekit: missing setting api_secret"], err
    assert not (tmp_path / "data").exists()  # it stopped before anything opened

    env = {k: v for k, v in env.items() if not k.startswith("SUP_PLUGINS_LIVEKIT_")}
    env["SUP_PLUGINS_ENABLED"] = "broken"
    code, _, err = await sup(*command, env=env)
    assert code == 2 and "plugin broken: cannot import sup_test_broken:Plugin: ModuleNotFoundError" in err, err
    assert "Traceback" not in err


async def test_a_plugin_failing_at_startup_stops_sup_run_in_one_line(tmp_path: Path, plugin_dir):
    env = sup_env(
        tmp_path / "data", SUP_PLUGINS_ENABLED="late", PYTHONPATH=os.pathsep.join([str(plugin_dir), *sys.path])
    )
    code, _, err = await sup("run", "--port", "0", env=env)
    assert code == 2, err
    assert "sup: configuration error: plugin late: startup failed: ConnectionError: no answer from the webhook" in err
    assert "Traceback" not in err
