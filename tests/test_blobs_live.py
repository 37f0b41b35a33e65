"""Blobs through the service as production runs it (gunicorn, sendfile), and 1 GiB
transfers with the web worker's memory watched."""

import hashlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from django.conf import settings

from accounts.models import EngineToken, Organization
from blobs import signing
from blobs.models import Blob, BlobState
from blobs.storage import FileSystemBlobStore
from tests.blob_helpers import digest_of, random_blob, short_put
from tests.s3 import seaweedfs  # noqa: F401
from tests.support import LiveService, basic

GIB = 1024 * 1024 * 1024
MIB = 1024 * 1024


class Generated:
    """`size` pseudo-random bytes, made on the fly (never all in memory): 1 MiB of random
    bytes, each copy stamped with its index so that no two MiB are alike."""

    def __init__(self, size, seed=b"cacheweb"):
        self.size = size
        self.pos = 0
        self._base = hashlib.shake_256(seed).digest(MIB)
        self._index = None
        self._block = b""

    def _block_at(self, index):
        if index != self._index:
            self._index = index
            self._block = index.to_bytes(8, "big") + self._base[8:]
        return self._block

    def read(self, n=-1):
        if self.pos >= self.size:
            return b""
        n = self.size - self.pos if n is None or n < 0 else min(n, self.size - self.pos)
        index, offset = divmod(self.pos, MIB)
        data = self._block_at(index)[offset : offset + min(n, MIB - offset)]
        self.pos += len(data)
        return data

    def digest(self):
        hasher = hashlib.sha256()
        for index in range(self.size // MIB):
            hasher.update(self._block_at(index))
        tail = self.size % MIB
        if tail:
            hasher.update(self._block_at(self.size // MIB)[:tail])
        return "sha256:" + hasher.hexdigest()


class Engine:
    """The engine's side of the protocol, over real HTTP."""

    def __init__(self, service, token):
        self.service = service
        self.auth = basic(token)

    def call(self, endpoint, body):
        parts = urllib.parse.urlsplit(self.service.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        conn.request("GET", f"/magicache/{endpoint}", body=json.dumps(body).encode() + b"\n",
                     headers={"Authorization": self.auth, "Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, json.loads(data)


def transfer_put(url, body, length, headers):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300, blocksize=MIB)
    conn.request("PUT", f"{parts.path}?{parts.query}", body=body,
                 headers={"Content-Length": str(length), **headers})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def transfer_get(url, headers=None):
    """(status, size, sha256 digest) of a GET, hashed as it streams."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    conn.request("GET", f"{parts.path}?{parts.query}", headers=headers or {})
    response = conn.getresponse()
    hasher, size = hashlib.sha256(), 0
    while chunk := response.read(MIB):
        hasher.update(chunk)
        size += len(chunk)
    conn.close()
    return response.status, size, "sha256:" + hasher.hexdigest()


def get_bytes(url, headers=None):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("GET", f"{parts.path}?{parts.query}", headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict((k.lower(), v) for k, v in response.getheaders()), data


def rss(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def worker_pids(service):
    master = service.proc.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


class PeakMemory:
    """The highest RSS of the service's gunicorn workers, sampled every 10 ms."""

    def __init__(self, service):
        self.pids = worker_pids(service)
        assert self.pids, "gunicorn has no worker"
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self):
        return sum(rss(pid) for pid in self.pids)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.01)

    def __enter__(self):
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture
def engine_org(transactional_db):
    org = Organization.ensure("live")
    return org, EngineToken.issue(org)[1]


def builtin_store():
    return FileSystemBlobStore(Path(settings.DATA_DIR) / "blobs")


def test_range_reads_and_reopening_through_gunicorn(live_service, engine_org):
    org, token = engine_org
    engine = Engine(live_service, token)
    data, digest = random_blob(3 * MIB + 17)
    status, answer = engine.call("layerUploadURL", {"Digest": digest})
    assert status == 200 and answer["Skip"] is False
    assert transfer_put(answer["URL"], data, len(data), answer["Headers"])[0] == 200
    status, answer = engine.call("layerDownloadURL", {"Digest": digest})
    url = answer["URL"]
    size = len(data)
    # gunicorn sends these with sendfile from the file's offset for Content-Length bytes.
    for offset in (0, 1, MIB - 1, MIB, 2 * MIB + 5, size - 1):
        status, headers, body = get_bytes(url, {"Range": f"bytes={offset}-"})
        assert status == 206
        assert headers["content-range"] == f"bytes {offset}-{size - 1}/{size}"
        assert body == data[offset:]
    for first, last in ((0, 9), (MIB - 3, MIB + 3), (size - 10, size + 100)):
        status, headers, body = get_bytes(url, {"Range": f"bytes={first}-{last}"})
        assert (status, body) == (206, data[first : last + 1])
    assert get_bytes(url, {"Range": f"bytes={size}-"})[0] == 416
    status, headers, body = get_bytes(url)
    assert (status, body) == (200, data)
    # Keep-alive after a windowed sendfile: the next response on the connection is intact.
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    for first, last in ((100, 199), (5, 5), (MIB, 2 * MIB)):
        conn.request("GET", f"{parts.path}?{parts.query}", headers={"Range": f"bytes={first}-{last}"})
        response = conn.getresponse()
        assert (response.status, response.read()) == (206, data[first : last + 1])
    conn.request("HEAD", f"{parts.path}?{parts.query}")
    response = conn.getresponse()
    assert (response.status, response.read(), response.getheader("Content-Length")) == (200, b"", str(size))
    conn.close()


def test_body_cut_short_through_gunicorn_keeps_nothing(live_service, engine_org):
    org, token = engine_org
    engine = Engine(live_service, token)
    data, digest = random_blob(2 * MIB)
    answer = engine.call("layerUploadURL", {"Digest": digest})[1]
    status = short_put(answer["URL"], data[: MIB + 3], len(data))
    assert status in (0, 400)
    final = builtin_store().path(org.pk, digest)
    assert not final.exists()
    assert not final.parent.exists() or list(final.parent.glob("*.part")) == []
    assert Blob.objects.get(organization=org, digest=digest).state == BlobState.PENDING
    # The service is fine afterwards, and the same URL still takes the whole blob.
    assert transfer_put(answer["URL"], data, len(data), {})[0] == 200
    assert final.read_bytes() == data


def put_on(conn, url, data, headers=None):
    parts = urllib.parse.urlsplit(url)
    conn.request("PUT", f"{parts.path}?{parts.query}", body=data,
                 headers={"Content-Length": str(len(data)), **(headers or {})})
    response = conn.getresponse()
    return response.status, response.read()


def test_puts_on_one_kept_alive_connection_stay_in_step(live_service, engine_org):
    """The PUT body is read straight from gunicorn's socket; whatever happens to a PUT,
    the next request on the same connection must be read from where it starts."""
    org, token = engine_org
    engine = Engine(live_service, token)
    data, digest = random_blob(3 * MIB + 5)
    other, other_digest = random_blob(40_000)
    url = engine.call("layerUploadURL", {"Digest": digest})[1]["URL"]
    other_url = engine.call("layerUploadURL", {"Digest": other_digest})[1]["URL"]
    # A URL bound to a size (as cache mount uploads are), sent a different length: refused
    # before a byte of the body is read, so gunicorn drains it (it closes the connection
    # instead when more than 64 KiB are left).
    bound = signing.signed_query(org.pk, other_digest, signing.UPLOAD, 60, size=len(other) + 1)
    bound_url = urllib.parse.urlsplit(other_url)._replace(query=urllib.parse.urlencode(bound)).geturl()
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60, blocksize=MIB)
    assert put_on(conn, url, data)[0] == 200
    status, body = put_on(conn, url, other)  # wrong bytes for this digest: read, then refused
    assert status == 400 and b"does not hash" in body
    status, body = put_on(conn, bound_url, other)
    assert status == 400 and b"announced size" in body
    assert put_on(conn, other_url, other)[0] == 200
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())
    conn.close()
    assert builtin_store().path(org.pk, digest).read_bytes() == data
    assert builtin_store().path(org.pk, other_digest).read_bytes() == other
    # The PUTs took the socket path (not gunicorn's copying reader).
    assert "read=socket" in live_service.output()


def test_pipelined_request_behind_a_put_is_answered(live_service, engine_org):
    org, token = engine_org
    engine = Engine(live_service, token)
    data, digest = random_blob(64 * 1024)
    parts = urllib.parse.urlsplit(engine.call("layerUploadURL", {"Digest": digest})[1]["URL"])
    put = (f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
           f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    get = f"GET /healthz HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(put + get)  # both at once: gunicorn reads part of the GET with the PUT
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    first, _, second = reply.partition(b"HTTP/1.1 200")[2].partition(b"HTTP/1.1 ")
    assert reply.startswith(b"HTTP/1.1 200") and second.startswith(b"200"), reply
    assert builtin_store().path(org.pk, digest).read_bytes() == data


# Streaming a GiB with flat memory depends on the web stack, not on the database: once.
@pytest.mark.slow
@pytest.mark.once
def test_one_gib_blob_up_and_down_with_flat_memory_builtin(live_service, engine_org):
    org, token = engine_org
    engine = Engine(live_service, token)
    # Warm the worker up (imports, first connections) before measuring.
    small, small_digest = random_blob(MIB)
    answer = engine.call("layerUploadURL", {"Digest": small_digest})[1]
    assert transfer_put(answer["URL"], small, len(small), {})[0] == 200
    assert transfer_get(engine.call("layerDownloadURL", {"Digest": small_digest})[1]["URL"])[2] == small_digest

    blob = Generated(GIB)
    digest = blob.digest()
    answer = engine.call("layerUploadURL", {"Digest": digest})[1]
    with PeakMemory(live_service) as memory:
        baseline = memory.current()
        status, body = transfer_put(answer["URL"], blob, GIB, answer["Headers"])
        assert status == 200, body
        url = engine.call("layerDownloadURL", {"Digest": digest})[1]["URL"]
        assert transfer_get(url) == (200, GIB, digest)
        status, size, _ = transfer_get(url, {"Range": f"bytes={GIB - MIB}-"})
        assert (status, size) == (206, MIB)
    print(f"built-in 1 GiB: worker RSS {baseline / MIB:.1f} MiB before, peak {memory.peak / MIB:.1f} MiB")
    assert memory.peak - baseline < 40 * MIB, (baseline, memory.peak)
    assert memory.peak < 150 * MIB
    path = builtin_store().path(org.pk, digest)
    assert path.stat().st_size == GIB
    assert Blob.objects.get(organization=org, digest=digest).size == GIB
    path.unlink()


# Streaming a GiB with flat memory depends on the web stack, not on the database: once.
@pytest.mark.slow
@pytest.mark.once
def test_one_gib_blob_up_and_down_through_s3(seaweedfs, engine_org):  # noqa: F811
    org, token = engine_org
    prefix = "live" + os.urandom(4).hex()
    service = LiveService(**seaweedfs.env(prefix=prefix))
    try:
        engine = Engine(service, token)
        blob = Generated(GIB, seed=b"s3")
        digest = blob.digest()
        answer = engine.call("layerUploadURL", {"Digest": digest})[1]
        assert answer["Skip"] is False
        assert answer["URL"].startswith(seaweedfs.endpoint_url)
        with PeakMemory(service) as memory:
            baseline = memory.current()
            status, body = transfer_put(answer["URL"], blob, GIB, answer["Headers"])
            assert status == 200, body
            # The service confirms the object (HEAD: size and checksum) before Skip.
            status, again = engine.call("layerUploadURL", {"Digest": digest})
            assert again == {"URL": "", "Headers": {}, "Skip": True}
            url = engine.call("layerDownloadURL", {"Digest": digest})[1]["URL"]
            assert transfer_get(url) == (200, GIB, digest)
            status, size, tail = transfer_get(url, {"Range": f"bytes={GIB - 10}-"})
            assert (status, size) == (206, 10)
        print(f"s3 1 GiB: worker RSS {baseline / MIB:.1f} MiB before, peak {memory.peak / MIB:.1f} MiB")
        assert memory.peak - baseline < 40 * MIB
        row = Blob.objects.get(organization=org, digest=digest)
        assert (row.state, row.size) == (BlobState.VERIFIED, GIB)
    finally:
        service.stop()
    key = f"{prefix}/{org.pk}/sha256/{digest.split(':')[1]}"
    assert seaweedfs.client().head_object(Bucket=seaweedfs.bucket, Key=key)["ContentLength"] == GIB
    seaweedfs.client().delete_object(Bucket=seaweedfs.bucket, Key=key)


def test_digest_helper_matches_stream():
    blob = Generated(3 * MIB + 5)
    data = b""
    while chunk := blob.read(1000_000):
        data += chunk
    assert len(data) == 3 * MIB + 5
    assert Generated(3 * MIB + 5).digest() == digest_of(data)
