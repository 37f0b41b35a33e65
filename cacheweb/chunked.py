"""Give Django the whole body of chunked requests.

The engine's Go client writes its JSON bodies through a pipe, so they arrive with
`Transfer-Encoding: chunked` and no `Content-Length`. Django's WSGIRequest reads exactly
CONTENT_LENGTH bytes and so would see every such body as empty. gunicorn already decodes
the chunks and says so with `wsgi.input_terminated`; this middleware reads the decoded
body (spooling large ones to disk), then hands it on with a real CONTENT_LENGTH.
"""

import json
import tempfile

from django.conf import settings

SPOOL_IN_MEMORY = 4 * 1024 * 1024
READ_SIZE = 1024 * 1024


def _json_response(start_response, status, message):
    body = json.dumps({"error": message}).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


class ChunkedBodyMiddleware:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked or environ.get("CONTENT_LENGTH"):
            return self.app(environ, start_response)
        if not environ.get("wsgi.input_terminated"):
            return _json_response(
                start_response,
                "411 Length Required",
                "this server cannot read chunked request bodies; run cacheweb behind gunicorn",
            )
        limit = settings.MAX_ENGINE_BODY
        stream = environ["wsgi.input"]
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        size = 0
        while True:
            try:
                data = stream.read(READ_SIZE)
            except Exception as exc:  # gunicorn's InvalidChunkSize, ChunkMissingTerminator, ...
                # gunicorn marks its body failed, so the connection is not reused.
                body.close()
                return _json_response(
                    start_response, "400 Bad Request", f"malformed chunked body: {type(exc).__name__}"
                )
            if not data:
                break
            size += len(data)
            if size > limit:
                body.close()
                return _json_response(
                    start_response,
                    "413 Request Entity Too Large",
                    f"request body is larger than {limit} bytes",
                )
            body.write(data)
        body.seek(0)
        environ["wsgi.input"] = body
        environ["CONTENT_LENGTH"] = str(size)
        return self.app(environ, start_response)
