"""Observability: GET /metrics (what it counts, who may read it, promtool's lint), request ids, JSON logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sup.observe.logs import REQUEST_ID, JsonFormatter, RequestIdFilter
from tests.conftest import IN_CI, Server, Socket, say, two_in_a_group
from tests.processes import Running, sup_env

TOKEN = "metrics-token-0123456789"


@pytest.fixture(scope="module")
async def observed(server_factory) -> Server:
    """Rate limits on (a low one per address, to see a refusal), a token, and trusted proxies for the id tests."""
    return await server_factory(
        SUP_RATELIMIT_ENABLED="true",
        SUP_RATELIMIT_AUTH_PER_IP="1000",
        SUP_RATELIMIT_PREKEY_BUNDLES_PER_USER="1",
        SUP_METRICS_TOKEN=TOKEN,
    )


async def scrape(server: Server, **headers: str) -> tuple[int, str]:
    async with server.api.session.get(server.url + "/metrics", headers=headers) as response:
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_what_the_server_does(observed: Server):
    api = observed.api
    alice, bob, chat = await two_in_a_group(api)
    sock = await Socket.connect(observed.url, api.session, bob.access_token)
    await sock.events(1, "chat.created")
    for i in range(3):
        await say(api, alice, chat, f"m{i}")
    await sock.events(3, "message.new")
    await api.get(f"/api/v1/chats/{chat}", token=alice.access_token)
    await api.upload(alice, b"x" * 5000, filename="a.bin")
    await api.publish_keys(bob)
    first = await api.get(f"/api/v1/crypto/prekeys/{bob.user_id}/{bob.device_id}", token=alice.access_token)
    refused = await api.get(f"/api/v1/crypto/prekeys/{bob.user_id}/{bob.device_id}", token=alice.access_token)
    assert (first.status, refused.status) == (200, 429)

    status, text = await scrape(observed)
    assert status == 200
    found = samples(text)
    # The route's template, never the id that was asked for.
    assert value(found, "sup_http_requests_total", method="GET", route="/api/v1/chats/{chat_id}", status="200") == 1
    assert chat not in text
    assert value(found, "sup_http_request_duration_seconds_count", method="GET", route="/api/v1/chats/{chat_id}") == 1
    assert value(found, "sup_ratelimit_refusals_total", route="/api/v1/crypto/prekeys/{user_id}/{device_id}") == 1
    assert value(found, "sup_upload_bytes_total") >= 5000
    assert value(found, "sup_websocket_connections") == 1
    assert (
        value(found, "sup_websocket_events_sent_total", path="live")
        + value(found, "sup_websocket_events_sent_total", path="catch_up")
        >= 4
    )
    assert value(found, "sup_delivery_lag_seconds_count") >= 1
    assert value(found, "sup_send_batch_size_count") >= 3
    assert value(found, "sup_send_batch_commit_seconds_count") >= 3
    assert value(found, "sup_db_connections_max") >= 2
    assert value(found, "process_resident_memory_bytes") > 0
    await sock.close()
    ended = {"method": "GET", "route": "/api/v1/ws", "status": "101"}
    for _ in range(100):  # the server sees the close a moment later, and ends the session after its cleanup
        found = samples((await scrape(observed))[1])
        if value(found, "sup_websocket_connections") == 0 and value(found, "sup_http_requests_total", **ended):
            break
        await asyncio.sleep(0.02)
    assert value(found, "sup_websocket_connections") == 0
    # A WebSocket session is counted when it ends, and not timed: its length is no latency.
    assert value(found, "sup_http_requests_total", method="GET", route="/api/v1/ws", status="101") == 1
    assert value(found, "sup_http_request_duration_seconds_count", method="GET", route="/api/v1/ws") == 0


async def test_the_output_passes_promtool(observed: Server):
    await observed.api.get("/health")
    status, text = await scrape(observed)
    assert status == 200
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("CI=true requires promtool (apt-get install prometheus; .ci/run does)")
        pytest.skip("promtool is not installed (Debian: apt-get install --no-install-recommends prometheus)")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_job_queue_depth_is_read_from_the_database(observed: Server):
    from sup.app import SCHEDULER

    await observed.app[SCHEDULER].enqueue("observe.test", b"", run_at=observed.clock.now_ms() + 3_600_000)
    found = samples((await scrape(observed))[1])
    assert value(found, "sup_jobs", kind="observe.test", state="queued") == 1


async def test_metrics_are_for_loopback_the_allow_list_or_the_token(server_factory, observed: Server):
    assert (await scrape(observed))[0] == 200
    # Through a proxy SUP does not trust, loopback is not proof of anything.
    assert (await scrape(observed, **{"X-Forwarded-For": "203.0.113.9"}))[0] == 403
    assert (await scrape(observed, Forwarded="for=203.0.113.9"))[0] == 403
    assert (await scrape(observed, **{"X-Forwarded-For": "203.0.113.9"}, Authorization=f"Bearer {TOKEN}"))[0] == 200

    closed = await server_factory(SUP_METRICS_ALLOW="10.0.0.0/8", SUP_METRICS_TOKEN=TOKEN)
    status, text = await scrape(closed)
    assert status == 403 and json.loads(text)["code"] == "forbidden"
    assert (await scrape(closed, Authorization=f"Bearer {TOKEN}"))[0] == 200
    assert (await scrape(closed, Authorization=f"Bearer {TOKEN}x"))[0] == 403
    assert (await scrape(closed, Authorization=TOKEN))[0] == 403

    # Behind a trusted proxy (here: loopback), the client's own address is what counts.
    proxied = await server_factory(SUP_SERVER_TRUSTED_PROXIES="127.0.0.1", SUP_METRICS_ALLOW="10.1.2.0/24")
    assert (await scrape(proxied, **{"X-Forwarded-For": "10.1.2.3"}))[0] == 200
    assert (await scrape(proxied, **{"X-Forwarded-For": "203.0.113.9"}))[0] == 403
    assert (await scrape(proxied))[0] == 403  # the proxy's own address is not in the list

    off = await server_factory(SUP_METRICS_ENABLED="false")
    assert (await scrape(off))[0] == 404
    assert (await off.api.get("/health")).status == 200


async def test_every_answer_carries_a_request_id(server_factory, observed: Server):
    api = observed.api
    ids = set()
    for path in ("/health", "/api/v1/nothing-here", "/metrics"):
        reply = await api.get(path)
        ids.add(reply.headers["X-Request-Id"])
        assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["X-Request-Id"])
    assert len(ids) == 3
    # From a client that is not a trusted proxy, an offered id is not taken.
    reply = await api.get("/health", headers={"X-Request-Id": "from-the-client-1234"})
    assert reply.headers["X-Request-Id"] != "from-the-client-1234"

    proxied = await server_factory(SUP_SERVER_TRUSTED_PROXIES="127.0.0.1")
    reply = await proxied.api.get("/health", headers={"X-Request-Id": "0f3a9c2b7e1d4c5a8b6e9d0c1b2a3f4e"})
    assert reply.headers["X-Request-Id"] == "0f3a9c2b7e1d4c5a8b6e9d0c1b2a3f4e"
    for insane in ("a b", "x" * 200, "<script>", "-starts-with-dash"):
        reply = await proxied.api.get("/health", headers={"X-Request-Id": insane})
        assert reply.headers["X-Request-Id"] != insane
        assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["X-Request-Id"])


def test_json_lines_carry_the_request_id_and_survive_any_message():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("sup.test_observe")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = REQUEST_ID.set("abc123")
        logger.warning('a "quoted"\nmessage: %s', {"k": 1})
        REQUEST_ID.reset(token)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["request_id"] == "abc123" and first["level"] == "WARNING" and first["logger"] == "sup.test_observe"
    assert first["message"] == "a \"quoted\"\nmessage: {'k': 1}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert "request_id" not in second and "ValueError: boom" in second["exception"]


async def test_sup_run_logs_json_lines_with_the_request_id_of_the_answer(tmp_path):
    env = sup_env(tmp_path, SUP_LOGGING_FORMAT="json", SUP_LOGGING_ACCESS_LOG="true")
    server = await Running.start(env)
    try:
        async with aiohttp.ClientSession() as session, session.get(server.url + "/api/v1/users/me") as response:
            assert response.status == 401
            rid = response.headers["X-Request-Id"]
        access = None
        for _ in range(100):
            lines = [json.loads(line) for line in server.log.splitlines() if line.strip()]
            access = next((entry for entry in lines if entry.get("request_id") == rid), None)
            if access:
                break
            await asyncio.sleep(0.05)
        assert access is not None, server.log
        assert access["logger"] == "sup.access" and access["level"] == "INFO"
        assert access["method"] == "GET" and access["route"] == "/api/v1/users/{user_id}" and access["status"] == 401
        assert access["path"] == "/api/v1/users/me"
        assert access["client_ip"] == "127.0.0.1" and access["duration_ms"] >= 0
        assert any("listening on" in entry["message"] for entry in lines)
    finally:
        await server.stop()


# -- the Grafana dashboard ----------------------------------------------------------------------

DASHBOARD = Path(__file__).resolve().parent.parent / "packaging" / "grafana" / "sup.json"
_PROMQL_WORDS = {
    *("by", "without", "on", "ignoring", "group_left", "group_right"),
    *("bool", "and", "or", "unless", "offset"),
}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: not functions, keywords, labels or Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # $__rate_interval, $instance
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if not call and name not in _PROMQL_WORDS:
            names.add(name)
    return names


def exposed_names(text: str) -> set[str]:
    """Every series name the exposition can have, from its TYPE lines (labelled metrics show those even unused)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
        elif kind == "summary":
            names.update({f"{name}_sum", f"{name}_count"})
    return names


def test_promql_names_are_found():
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(sup_x_bucket{instance=~"$instance",status=~"5.."}'
        "[$__rate_interval]))) / on (job) group_left sup_y offset 5m and 1e3 * process_z"
    )
    assert promql_metric_names(expr) == {"sup_x_bucket", "sup_y", "process_z"}


async def test_the_dashboard_reads_only_metrics_that_exist_and_shows_every_one(observed: Server):
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    expressions = [t["expr"] for p in panels for t in p["targets"]]
    variables = [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = set().union(*(promql_metric_names(e) for e in expressions))
    used |= {re.match(r"label_values\((\w+)", v).group(1) for v in variables}
    status, text = await scrape(observed)
    assert status == 200
    exposed = exposed_names(text)
    assert used - exposed == set(), "the dashboard reads metrics /metrics does not have"
    families = {n for n in re.findall(r"^# TYPE (sup_\S+) ", text, re.M) if not n.endswith("_created")}
    shown = {f for f in families if any(name == f or name.startswith(f + "_") for name in used)}
    assert families - shown == set(), "a metric of SUP's own is on no panel"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
