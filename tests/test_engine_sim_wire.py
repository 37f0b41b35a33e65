"""The simulator against an in-process reference service: what it puts on the wire, and
that it catches the faults it exists to catch (wrong hits, ignored Range, non-200 mounts).

The reference service here is deliberately small but correct: records keyed by a content
address over digest and inputs, one result per record, each root once, Range honoured.
Its `faults` switch on the classic mistakes, one at a time.
"""

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from enginesim import layers as layerlib
from enginesim.scenarios import RunOptions, run


def _sha(text):
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class ReferenceService:
    def __init__(self, faults=()):
        self.faults = set(faults)
        self.requests = []  # (method, path, headers, body, chunked)
        self.records = {}  # identity -> {"digest", "inputs": {i: {(sel, identity)}}, "result"}
        self.blobs = {}
        self.mounts = {}
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                # Headers and body go out in two writes: without this, Nagle plus delayed
                # ACKs add 40 ms to every call and the tests crawl.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return out, True
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length), False

            def _reply(self, status, body=b"", headers=()):
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_one(self, method):
                body, chunked = self._body()
                with service.lock:
                    service.requests.append((method, self.path, dict(self.headers), body, chunked))
                    status, payload, headers = service.dispatch(method, self.path, self.headers, body)
                self._reply(status, payload, headers)

            def do_GET(self):
                self.handle_one("GET")

            def do_POST(self):
                self.handle_one("POST")

            def do_PUT(self):
                self.handle_one("PUT")

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # the simulator drops Range connections mid-body on purpose

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    # --- the protocol --------------------------------------------------------------------

    def dispatch(self, method, path, headers, body):
        if path.startswith("/blob/"):
            return self.blob(method, path[len("/blob/"):], headers, body)
        if not path.startswith("/magicache/"):
            return 404, {"error": "no such endpoint"}, ()
        if headers.get("Authorization") != "Basic dG9rOg==":  # "tok:"
            return 401, {"error": "bad token"}, ()
        name = path[len("/magicache/"):]
        data = json.loads(body) if body else None
        handler = getattr(self, "api_" + name, None)
        if handler is None:
            return 404, {"error": "no such endpoint"}, ()
        return 200, handler(data), ()

    def api_config(self, data):
        return {"ImportPeriod": 5 * 10**9, "ExportPeriod": 10**10, "ExportTimeout": 6 * 10**10}

    def api_records(self, data):
        links_by_id = {}
        for link in data["Links"] or ():
            links_by_id.setdefault(link["ID"], []).append(link)
        identities = {}

        def identity(key_id):
            if key_id in identities:
                return identities[key_id]
            links = links_by_id.get(key_id)
            if not links:
                ident = key_id
                entry = {"digest": key_id, "inputs": {}}
            else:
                inputs = {}
                for link in links:
                    inputs.setdefault(link["Input"], set()).add((link["Selector"], identity(link["LinkedID"])))
                digest = links[0]["Digest"]
                if "digest_only" in self.faults:
                    ident = digest
                else:
                    ident = _sha(json.dumps([digest, sorted((i, sorted(v)) for i, v in inputs.items())]))
                entry = {"digest": digest, "inputs": inputs}
            identities[key_id] = ident
            record = self.records.setdefault(ident, {**entry, "result": None})
            for i, alts in entry["inputs"].items():
                record["inputs"].setdefault(i, set()).update(alts)
            return ident

        export = []
        for key in data["CacheKeys"] or ():
            ident = identity(key["ID"])
            if ident.startswith("random:") or self._random_below(ident):
                continue
            if key["Results"] and self.records[ident]["result"] is None:
                export.append({"Digest": ident, "CacheRefID": key["Results"][-1]["ID"]})
        return {"ExportRecords": export or None}

    def _random_below(self, ident):
        record = self.records[ident]
        return any(src.startswith("random:") or self._random_below(src)
                   for alts in record["inputs"].values() for _, src in alts)

    def api_layers(self, data):
        for update in data["UpdatedRecords"] or ():
            self.records[update["RecordDigest"]]["result"] = update["Layers"]
        return {}

    def api_import(self, data):
        layers, layer_index, records, record_index = [], {}, [], {}

        def add_layer(desc, parent):
            key = (desc["digest"], parent)
            if key not in layer_index:
                ann = desc["annotations"]
                layer_index[key] = len(layers)
                layers.append({"blob": desc["digest"], "parent": parent, "annotations": {
                    "mediaType": desc["mediaType"], "diffID": ann["containerd.io/uncompressed"],
                    "size": desc["size"], "createdAt": ann["buildkit/createdat"]}})
            return layer_index[key]

        def add_record(ident):
            if ident in record_index:
                return record_index[ident]
            rec = self.records[ident]
            inputs = [[{"selector": sel, "link": add_record(src)} for sel, src in sorted(rec["inputs"][i])]
                      for i in sorted(rec["inputs"])]
            out = {"digest": rec["digest"], "inputs": inputs}
            if rec["result"]:
                parent = -1
                for desc in rec["result"]:
                    parent = add_layer(desc, parent)
                out["layers"] = [{"layer": parent, "createdAt": "2024-07-02T14:16:03Z"}]
            record_index[ident] = len(records)
            records.append(out)
            return record_index[ident]

        for ident in list(self.records):
            if not ident.startswith("random:") and not self._random_below(ident):
                add_record(ident)
        if "no_diffid" in self.faults and layers:
            del layers[0]["annotations"]["diffID"]
        return {"layers": layers, "records": records}

    def _blob_url(self, digest):
        return f"{self.url}/blob/{digest}"

    def api_layerUploadURL(self, data):
        if data["Digest"] in self.blobs:
            return {"Skip": True}
        return {"URL": self._blob_url(data["Digest"]), "Headers": {"x-amz-checksum-sha256": "Zm9v"}}

    def api_layerDownloadURL(self, data):
        return {"URL": self._blob_url(data["Digest"])}

    def api_cacheMountConfig(self, data):
        return {"SyncedCacheMounts": [
            {"Name": name, "Digest": d, "Size": len(self.blobs[d]), "MediaType": layerlib.ZSTD_MEDIA_TYPE,
             "URL": self._blob_url(d)} for name, d in sorted(self.mounts.items())] or None}

    def api_cacheMountUploadURL(self, data):
        self.pending_mount = (data["CacheName"], data["Digest"])
        return {"URL": self._blob_url(data["Digest"]) + "?mount=" + data["CacheName"], "Headers": {}}

    def blob(self, method, rest, headers, body):
        digest, _, query = rest.partition("?")
        if method == "PUT":
            if len(body) != int(headers["Content-Length"]) or _sha_bytes(body) != digest:
                return 400, {"error": "digest mismatch"}, ()
            self.blobs[digest] = body
            if query.startswith("mount="):
                self.mounts[query[len("mount="):]] = digest
                return (201 if "mount_201" in self.faults else 200), b"", ()
            return 201, b"", ()
        data = self.blobs.get(digest)
        if data is None:
            return 404, b"", ()
        offset = int(headers.get("Range", "bytes=0-")[len("bytes="):-1])
        if "ignore_range" in self.faults or offset == 0:
            return 200, data, ()
        return 206, data[offset:], (("Content-Range", f"bytes {offset}-{len(data) - 1}/{len(data)}"),)


def _sha_bytes(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def reference():
    services = []

    def make(*faults):
        service = ReferenceService(faults)
        services.append(service)
        return service

    yield make
    for service in services:
        service.stop()


def _options(service, **kw):
    kw.setdefault("scale", 16 * 1024)
    kw.setdefault("settle_seconds", 0)
    return RunOptions(url=service.url + "/magicache", token="tok", **kw)


def test_api_calls_go_out_like_the_go_client(reference):
    service = reference()
    report = run(_options(service, engines=1))
    assert report.ok, report.lines()
    api = [r for r in service.requests if r[1].startswith("/magicache/")]
    names = [r[1] for r in api]
    assert names[:3] == ["/magicache/config", "/magicache/cacheMountConfig", "/magicache/import"]
    for method, path, headers, body, chunked in api:
        assert headers["Authorization"] == "Basic dG9rOg=="
        assert headers["User-Agent"] == "Go-http-client/1.1"
        assert headers["Accept-Encoding"] == "gzip"
        if path == "/magicache/import":
            assert method == "GET" and body == b"" and not chunked
            assert "Content-Length" not in headers and "Content-Type" not in headers
        else:
            # The body came chunked with no Content-Length, as through Go's io.Pipe.
            assert chunked and "Content-Length" not in headers
            assert headers["Content-Type"] == "application/json"
            assert body.endswith(b"\n") and json.loads(body) is not None
    config = next(r for r in api if r[1] == "/magicache/config")
    assert config[0] == "GET" and json.loads(config[3]) == {"EngineID": report_engine_id(service)}
    first_export, records = [json.loads(r[3]) for r in api if r[1] == "/magicache/records"]
    assert first_export == {"CacheKeys": None, "Links": None}  # before any build
    assert set(records) == {"CacheKeys", "Links"}
    assert any(k["Results"] is None for k in records["CacheKeys"])  # content keys: nil slice
    # A long-running engine's store: released results on linked keys, keys with two results.
    assert any(k["Results"] is None and len(k["ID"]) == 25 for k in records["CacheKeys"])
    assert any(k["Results"] and len(k["Results"]) == 2 for k in records["CacheKeys"])
    assert b"\\u0026\\u0026" in next(r for r in api if r[1] == "/magicache/records" and b"apt-get" in r[3])[3]
    assert {"ID", "LinkedID", "Input", "Digest", "Selector"} == set(records["Links"][0])
    created = [r["CreatedAt"] for k in records["CacheKeys"] if k["Results"] for r in k["Results"]]
    assert all(c.endswith("Z") and "." in c for c in created)  # engine 0 logs UTC, with nanoseconds
    assert any(k["ID"].startswith("random:") for k in records["CacheKeys"])
    non_roots = {link["ID"] for link in records["Links"]}
    assert all(len(i) == 25 and i.isalnum() for i in non_roots)


def report_engine_id(service):
    config = next(r for r in service.requests if r[1] == "/magicache/config")
    return json.loads(config[3])["EngineID"]


def test_blob_puts_carry_length_and_canonical_headers(reference):
    service = reference()
    assert run(_options(service, engines=1)).ok
    puts = [r for r in service.requests if r[0] == "PUT"]
    assert puts
    for method, path, headers, body, chunked in puts:
        assert not chunked and int(headers["Content-Length"]) == len(body)
    layer_puts = [r for r in puts if "mount=" not in r[1]]
    assert all(r[2]["X-Amz-Checksum-Sha256"] == "Zm9v" for r in layer_puts)


def test_pair_gets_hits_for_earlier_work_only(reference):
    service = reference()
    report = run(_options(service, engines=2))
    assert report.ok, report.lines()
    assert report.hits > 0 and report.misses == 0, report.lines()
    assert report.hits == report.expected_hits
    assert report.layers_downloaded > 0 and report.range_reopens > 0
    assert report.mounts_downloaded >= 1 and report.mounts_uploaded >= 2
    # The second engine built work nobody built; none of it may come back as a hit.
    assert report.keys_checked > report.hits


def test_digest_only_records_are_caught_as_wrong_hits(reference):
    service = reference("digest_only")
    report = run(_options(service, engines=2))
    assert report.wrong_hits, report.lines()
    assert not report.ok


def test_a_server_ignoring_range_is_a_violation(reference):
    service = reference("ignore_range")
    report = run(_options(service, engines=2))
    assert any("Range" in v for v in report.violations), report.lines()


def test_mount_upload_needs_exactly_200(reference):
    service = reference("mount_201")
    report = run(_options(service, engines=1))
    assert any("exactly 200" in v for v in report.violations), report.lines()


def test_a_layer_without_diffid_fails_the_whole_import(reference):
    service = reference("no_diffid")
    report = run(_options(service, engines=2))
    assert any("missing diffID" in v for v in report.violations), report.lines()
    assert report.hits == 0


def test_fleet_rounds_share_work(reference):
    service = reference()
    report = run(_options(service, scenario="fleet", engines=4, rounds=2))
    assert report.ok, report.lines()
    assert report.hits > 0 and report.misses == 0, report.lines()
    assert set(report.calls) >= {"config", "records", "layers", "import", "layerUploadURL", "layerDownloadURL"}


def test_engine_sim_command_exits_1_on_a_wrong_hit_and_0_when_clean(reference, capsys):
    from django.core.management import call_command

    args = ["--token", "tok", "--scale", "4096", "--settle", "0"]
    call_command("engine_sim", "--url", reference().url + "/magicache", *args)
    assert capsys.readouterr().out.strip().endswith("OK")
    with pytest.raises(SystemExit) as exited:
        call_command("engine_sim", "--url", reference("digest_only").url + "/magicache", *args)
    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert "WRONG HIT" in out and "p50 ms" in out
