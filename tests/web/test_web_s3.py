"""With S3 blob storage, a plaintext chat's photo comes straight from the bucket (a presigned URL): the
page's Content-Security-Policy names the bucket's origin for images and video, learnt at startup from the
URLs the blob store signs, so the photo shows and nothing is blocked (`problems` fails on any violation)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import png_bytes
from tests.s3server import MotoS3
from tests.web.conftest import AppServer, PageProblems, WebUser, image_shown, running_server


@pytest.fixture(scope="module")
async def s3_server(tmp_path_factory, moto_s3: MotoS3) -> AsyncIterator[AppServer]:
    env = moto_s3.env(f"s3://web-{uuid.uuid4().hex[:8]}/sup")
    async with running_server(tmp_path_factory.mktemp("sup-web-s3"), **env) as server:
        yield server


async def test_a_plaintext_chats_photo_from_the_bucket(
    browser: Any, s3_server: AppServer, moto_s3: MotoS3, problems: PageProblems, tmp_path: Path
):
    async with aiohttp.ClientSession() as http, http.get(f"{s3_server.url}/") as page:
        policy = dict(part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";"))
    assert moto_s3.endpoint_url in policy["img-src"].split()
    assert moto_s3.endpoint_url in policy["media-src"].split()
    assert moto_s3.endpoint_url not in policy["connect-src"] and moto_s3.endpoint_url not in policy["script-src"]

    alice = await (await WebUser.open(browser, s3_server, problems)).sign_up()
    bob = await (await WebUser.open(browser, s3_server, problems)).sign_up()
    try:
        await alice.create_group("Open house", [bob.username], encrypted=False)
        photo = tmp_path / "garden.png"
        photo.write_bytes(png_bytes(200, 120, (30, 140, 60)))
        await alice.page.locator("#attach-input").set_input_files(str(photo))
        await bob.open_chat("Open house")
        image = await image_shown(bob.messages.get_by_role("img", name="Photo: garden.png"), timeout=30_000)
        assert (await image.get_attribute("src")).startswith(moto_s3.endpoint_url + "/")
    finally:
        await alice.close()
        await bob.close()
