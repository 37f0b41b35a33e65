"""Helpers for the blob tests: one way to PUT and GET a blob URL, whichever storage
issued it (the Django test client for the built-in storage, HTTP for S3)."""

import hashlib
import io
import os
import socket
import urllib.parse
from dataclasses import dataclass

import requests

from blobs.storage import get_store
from tests.support import engine_request


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def random_blob(size=200_000):
    data = os.urandom(size)
    return data, digest_of(data)


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        import json

        return json.loads(self.body)


class Transport:
    """PUT/GET/HEAD a blob URL. URLs on http://testserver go through the test client
    (the built-in storage's views), others over real HTTP (SeaweedFS, gunicorn)."""

    def __init__(self, client):
        self.client = client

    def _local(self, url):
        parts = urllib.parse.urlsplit(url)
        if parts.netloc != "testserver":
            return None
        return parts.path + ("?" + parts.query if parts.query else "")

    def put(self, url, data, headers=None, content_length=None):
        headers = dict(headers or {})
        local = self._local(url)
        if local is None:
            r = requests.put(url, data=data, headers=headers, timeout=60)
            return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
        extra = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
        if content_length is not None:
            # A body cut short: the stream ends before the announced length.
            extra["CONTENT_LENGTH"] = str(content_length)
            extra["wsgi.input"] = io.BytesIO(data)
        response = self.client.generic("PUT", local, data=data, content_type="application/octet-stream", **extra)
        return self._reply(response)

    def get(self, url, headers=None, method="GET"):
        headers = dict(headers or {})
        local = self._local(url)
        if local is None:
            r = requests.request(method, url, headers=headers, timeout=60)
            return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
        extra = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
        response = self.client.generic(method, local, **extra)
        return self._reply(response)

    @staticmethod
    def _reply(response):
        # The test client closes the response itself (closing it again here would fire
        # request_finished and close the test's database connection).
        body = b"".join(response.streaming_content) if response.streaming else response.content
        return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, body)


def short_put(url, data, declared_length, headers=None):
    """PUT over a raw socket announcing `declared_length` bytes but sending only `data`,
    then half-closing: a client that died mid-upload. Returns the status (0 if the server
    just closed the connection)."""
    parts = urllib.parse.urlsplit(url)
    lines = [f"PUT {parts.path}?{parts.query} HTTP/1.1", f"Host: {parts.netloc}",
             f"Content-Length: {declared_length}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while part := sock.recv(65536):
                reply += part
        except ConnectionResetError:
            pass
    if not reply:
        return 0
    return int(reply.split(b" ", 2)[1])


def stored(org, digest):
    """Does the configured store hold bytes for this organization's digest?"""
    return get_store().info(org.pk, digest) is not None


def partial_files(org):
    """Temporary upload files left behind on the built-in storage."""
    store = get_store()
    if store.kind != "filesystem":
        return []
    root = store.root / str(org.pk)
    return [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".part")] if root.exists() else []


def upload_url(client, token, digest):
    return engine_request(client, "GET", "/magicache/layerUploadURL", token=token, body={"Digest": digest})


def download_url(client, token, digest):
    return engine_request(client, "GET", "/magicache/layerDownloadURL", token=token, body={"Digest": digest})
