"""A real S3-compatible HTTP server on 127.0.0.1 for the tests: moto's standalone server (``moto[server]``), in its own
process, reached the way users reach MinIO: ``AWS_ENDPOINT_URL`` plus the usual credential variables.

One fix-up sits between moto and its clients. moto 5.2.1 answers CompleteMultipartUpload with the root element
``<CompleteMultipartUploadResponse>``; S3 (its API reference, and every real store) answers
``<CompleteMultipartUploadResult>``. pyarrow 26 checks that name and takes anything else for "an error embedded in
a 200 OK response", so every multipart upload (any file pyarrow or Ray writes through ``open_output_stream``)
fails against plain moto after retries. The WSGI wrapper below renames that one element; nothing else changes.

Run as a script (``python tests/s3_server.py PORT``) it serves until killed; :func:`s3_server` starts it on a free
port, creates a bucket and yields the environment for the clients, then stops it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Iterator

ACCESS_KEY, SECRET_KEY, REGION = "macdiff-test", "macdiff-test-secret", "us-east-1"


class _CompleteMultipartFix:
    """WSGI middleware: ``CompleteMultipartUploadResponse`` -> ``CompleteMultipartUploadResult`` (see module doc)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST" or "uploadId=" not in environ.get("QUERY_STRING", ""):
            return self.app(environ, start_response)
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"], captured["exc"] = status, headers, exc_info
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        body = body.replace(b"<CompleteMultipartUploadResponse", b"<CompleteMultipartUploadResult")
        body = body.replace(b"</CompleteMultipartUploadResponse>", b"</CompleteMultipartUploadResult>")
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers, captured["exc"])
        return [body]


def serve(port: int) -> None:
    import logging

    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = _CompleteMultipartFix(DomainDispatcherApplication(create_backend_app))
    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(endpoint: str) -> dict:
    """The variables a user sets for an S3-compatible store."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION}


@contextlib.contextmanager
def s3_server(bucket: str = "macdiff", log_path: str | None = None) -> Iterator[dict]:
    """Start the server on a free loopback port, create ``bucket``; yield the client environment (plus
    ``MACDIFF_TEST_BUCKET``). Stops the server on exit."""
    port = free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, __file__, str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the S3 test server did not start on {endpoint} (exit {proc.poll()})")
                time.sleep(0.2)
        env = client_env(endpoint)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                     region_name=REGION).create_bucket(Bucket=bucket)
        yield dict(env, MACDIFF_TEST_BUCKET=bucket)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        if log_path:
            log.close()


@contextlib.contextmanager
def patched_environ(values: dict) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    serve(int(sys.argv[1]))
