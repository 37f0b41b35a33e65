"""deploy/nginx/cacheweb.conf in front of the service, as production runs it: Debian's
nginx terminating TLS (a throwaway self-signed certificate) before gunicorn, and the
engine stand-in speaking HTTPS through it: exports, imports with hits, a cache mount
round trip, and a 50 MB blob up and down with Range reads.

bin/test installs Debian's nginx and openssl when it can; without them this module skips."""

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from enginesim.scenarios import RunOptions, run
from enginesim.wire import CallLog, GoHTTPClient
from tests.support import ROOT, CeleryWorker, LiveService, free_port

NGINX = Path("/usr/sbin/nginx")
CONF = ROOT / "deploy" / "nginx" / "cacheweb.conf"
BLOB_SIZE = 50 * 1024 * 1024

pytestmark = [
    pytest.mark.once,  # CI runs it in the embedded pass only (pytest.ini)
    pytest.mark.skipif(not NGINX.exists(), reason="Debian's nginx is not installed (/usr/sbin/nginx): apt-get install nginx"),
    pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed: apt-get install openssl"),
    pytest.mark.django_db(transaction=True),
]


def substitute(text, old, new):
    """Replace `old` (a regex) in the shipped config, which must contain it: a test that
    quietly ran some other config would prove nothing."""
    changed, count = re.subn(old, new, text)
    assert count, f"deploy/nginx/cacheweb.conf no longer contains {old!r}"
    return changed


def site_config(https_port, http_port, upstream_port, cert, key):
    text = CONF.read_text()
    text = substitute(text, r"server 127\.0\.0\.1:8080;", f"server 127.0.0.1:{upstream_port};")
    text = substitute(text, r"listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
    text = substitute(text, r"listen 80;", f"listen 127.0.0.1:{http_port};")
    text = substitute(text, r"\n\s*listen \[::\]:(80|443)[^;]*;", "")
    text = substitute(text, r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};")
    text = substitute(text, r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};")
    return text


class Nginx:
    def __init__(self, workdir, site):
        self.workdir = workdir
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (workdir / name).mkdir()
        (workdir / "cacheweb.conf").write_text(site)
        # Run as root (as here), the workers would drop to `nobody`, who cannot read the
        # test's private temporary directory.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (workdir / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\n"
            f"error_log {workdir}/error.log info;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"  access_log {workdir}/access.log;\n"
            f"  client_body_temp_path {workdir}/body;\n  proxy_temp_path {workdir}/proxy;\n"
            f"  fastcgi_temp_path {workdir}/fastcgi;\n  uwsgi_temp_path {workdir}/uwsgi;\n"
            f"  scgi_temp_path {workdir}/scgi;\n"
            f"  include {workdir}/cacheweb.conf;\n"
            "}\n"
        )
        args = [str(NGINX), "-p", str(workdir), "-c", str(workdir / "nginx.conf")]
        check = subprocess.run([*args, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def log(self):
        return (self.workdir / "error.log").read_text(errors="replace")[-3000:]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def front(tmp_path, certificate, monkeypatch):
    """gunicorn (behind a proxy, no CACHEWEB_PUBLIC_URL: blob URLs come from the forwarded
    headers), a Celery worker, and nginx with the shipped config before them. Yields the
    HTTPS base URL; clients in this process trust the throwaway certificate."""
    service = LiveService(CACHEWEB_BEHIND_PROXY="1")
    worker = CeleryWorker()
    https_port = free_port()
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    nginx = Nginx(workdir, site_config(https_port, free_port(), service.port, *certificate))
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    base = f"https://127.0.0.1:{https_port}"
    try:
        deadline = time.monotonic() + 20
        while not (workdir / "nginx.pid").exists():
            assert nginx.proc.poll() is None and time.monotonic() < deadline, nginx.log()
            time.sleep(0.1)
        yield base, service, nginx
    finally:
        nginx.stop()
        worker.stop()
        service.stop()


def test_engines_export_import_and_sync_mounts_over_https_through_nginx(front, token):
    base, service, nginx = front
    report = run(RunOptions(url=base + "/magicache", token=token, engines=2, scale=8 * 1024, settle_seconds=30))
    summary = "\n".join(report.lines()) + f"\n--- gunicorn ---\n{service.output()[-3000:]}\n--- nginx ---\n{nginx.log()}"
    assert report.violations == [] and report.wrong_hits == [], summary
    assert report.exported_records > 0 and report.layers_uploaded > 0, summary
    assert report.hits > 0 and report.misses == 0, summary
    assert report.layers_downloaded > 0 and report.range_reopens > 0, summary
    assert report.mounts_uploaded >= 2 and report.mounts_downloaded >= 1, summary
    # Every call went through nginx: its access log has the engine API and the blob data.
    access = (nginx.workdir / "access.log").read_text()
    assert '"POST /magicache/records HTTP/1.1" 200' in access
    assert '"PUT /blobs/' in access and '"GET /blobs/' in access and '" 206 ' in access


def test_a_50_mb_blob_up_and_down_with_range_reads(front, token):
    base, service, nginx = front
    data = os.urandom(BLOB_SIZE)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client = GoHTTPClient(base + "/magicache", token, CallLog())
    try:
        answer = client.api("GET", "layerUploadURL", {"Digest": digest})
        assert answer["Skip"] is False
        # The URL handed out is nginx's, from X-Forwarded-Proto and X-Forwarded-Host.
        assert answer["URL"].startswith(f"{base}/blobs/"), answer
        assert client.put_blob("layer PUT", answer["URL"], data, answer["Headers"], exact_200=True) == 200
        assert client.api("GET", "layerUploadURL", {"Digest": digest})["Skip"] is True

        url = client.api("GET", "layerDownloadURL", {"Digest": digest})["URL"]
        assert url.startswith(f"{base}/blobs/")
        reader = client.range_reader("layer GET", url, BLOB_SIZE)
        whole = reader.read_at(BLOB_SIZE, 0)
        assert hashlib.sha256(whole).hexdigest() == digest.removeprefix("sha256:")
        # The engine re-opens at another offset after a non-sequential read.
        middle = 31 * 1024 * 1024 + 7
        assert reader.read_at(4096, middle) == data[middle : middle + 4096]
        tail = BLOB_SIZE - 1000
        assert reader.read_at(5000, tail) == data[tail:]
        reader.close()
        assert [(offset, status) for offset, status, _ in reader.opens] == [(0, 206), (middle, 206), (tail, 206)]
        assert reader.opens[1][2] == f"bytes {middle}-{BLOB_SIZE - 1}/{BLOB_SIZE}"
    finally:
        client.close()
