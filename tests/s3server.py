"""moto's S3 server on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import logging

from moto.server import ThreadedMotoServer

ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # moto accepts any credentials
REGION = "us-east-1"


class MotoS3:
    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = ""

    def start(self) -> MotoS3:
        # werkzeug logs every request at INFO; a 40 MiB upload would flood the test output.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def env(self, blobs_url: str) -> dict[str, str]:
        """The SUP_* settings of a server that keeps its files here, at `blobs_url` (s3://bucket/prefix)."""
        return {
            "SUP_BLOBS_URL": blobs_url,
            "SUP_BLOBS_S3_ENDPOINT_URL": self.endpoint_url,
            "SUP_BLOBS_S3_REGION": REGION,
            "SUP_BLOBS_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "SUP_BLOBS_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "SUP_BLOBS_S3_ADDRESSING_STYLE": "path",
            "SUP_BLOBS_S3_CREATE_BUCKET": "true",
        }
