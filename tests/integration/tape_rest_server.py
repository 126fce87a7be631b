#!/usr/bin/env python3
"""A WLCG Tape REST API (v1) storage for ftsd's tests: python3 standard library only.

It serves the files of a directory over HTTPS (client certificates, grid proxies included)
and keeps them "on tape" as a tape system would:

- a file found in the directory is on tape only (locality TAPE, offline: GET answers 503)
  until a stage request for it has waited --stage-delay seconds (or its own delay); then it is
  on disk too (DISK_AND_TAPE) until released;
- a file written with PUT is on disk only (DISK) until --archive-delay seconds have passed
  (or its own delay, or never), then DISK_AND_TAPE;
- discovery (/.well-known/wlcg-tape-rest-api), POST /api/v1/stage, GET/DELETE
  /api/v1/stage/<id>, POST /api/v1/stage/<id>/cancel, POST /api/v1/release/<id>,
  POST /api/v1/archiveinfo as the specification describes them, errors as RFC 7807 bodies;
- macaroons (POST with Content-Type application/macaroon-request) so a WebDAV third-party
  copy can read and write with a bearer token; COPY itself is refused (405).

Every error the specification names can be injected per path through POST /_control
(JSON {"path": "/f", ...}): "deny" (the stage request is refused, 403), "lost" (stage fails
with an error, locality LOST), "stage_error" (the file's stage fails with that text),
"stage_delay", "archive_delay", "never_archive", "locality" (forced: NONE, UNAVAILABLE, ...),
"archive_error" (archiveinfo answers an error for it). Requests for paths that do not exist,
directories and empty files get the file-specific errors of the specification; unknown
request ids 404; cancel of a path outside the request 400 "File missing from stage request";
malformed bodies 400 "JSON Validation error". GET /_control/log lists every request received
(method, path, JSON body, client subject). Injections are per path, so tests sharing one
server do not see each other's.
"""

import argparse
import base64
import json
import os
import re
import secrets
import ssl
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = "/api/v1"
LOCK = threading.Lock()
PATHS = {}  # path -> dict of residency and injections
REQUESTS = {}  # id -> stage request
LOG = []
MACAROONS = set()
ARGS = None
ISO_DURATION = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")


def collapse(path):
    return re.sub(r"/+", "/", path)


def local(path):
    return os.path.join(ARGS.data, collapse(path).lstrip("/"))


def entry(path):
    """The residency of `path`, created on first sight: on tape only if it exists."""
    path = collapse(path)
    e = PATHS.get(path)
    if e is None:
        e = {"on_tape": True, "online_until": 0.0, "written_at": None, "pins": 0}
        PATHS[path] = e
    return e


def online(path, now):
    e = entry(path)
    return e["written_at"] is not None or e["online_until"] > now


def on_tape(path, now):
    e = entry(path)
    if e.get("never_archive"):
        return False
    if e["written_at"] is None:
        return e["on_tape"]
    delay = e.get("archive_delay", ARGS.archive_delay)
    return now >= e["written_at"] + delay


def tape_file_error(path):
    """The specification's file-specific error for what cannot be staged, or None."""
    p = local(path)
    e = entry(path)
    if e.get("lost"):
        return "File is lost: no readable tape copy"
    if e.get("stage_error"):
        return e["stage_error"]
    if not os.path.exists(p):
        return "USER ERROR: file does not exist or is not accessible to you"
    if os.path.isdir(p):
        return "USER ERROR: the path is a directory, not a tape file"
    if os.path.getsize(p) == 0:
        return "USER ERROR: empty files are not stored on tape"
    return None


def file_state(req, f, now):
    """Advance one file of a stage request to `now` and return its JSON."""
    if f["state"] in ("SUBMITTED", "STARTED"):
        error = tape_file_error(f["path"])
        if error is not None:
            f.update(state="FAILED", error=error, startedAt=int(req["createdAt"]), finishedAt=int(now))
        else:
            delay = entry(f["path"]).get("stage_delay", ARGS.stage_delay)
            if now >= req["created"] + delay:
                e = entry(f["path"])
                e["online_until"] = max(e["online_until"], now + f["lifetime"])
                e["pins"] += 1
                f.update(state="COMPLETED", startedAt=int(req["createdAt"]), finishedAt=int(now))
            else:
                f.update(state="STARTED", startedAt=int(req["createdAt"]))
    out = {"path": f["path"], "state": f["state"]}
    for k in ("error", "startedAt", "finishedAt"):
        if k in f:
            out[k] = f[k]
    return out


def duration_seconds(text):
    m = ISO_DURATION.match(text)
    if not m:
        return None
    y, mo, w, d, _, h, mi, s, _ = m.groups()
    n = lambda v: float(v[:-1]) if v else 0.0
    return n(y) * 365 * 86400 + n(mo) * 30 * 86400 + n(w) * 7 * 86400 + n(d) * 86400 + n(h) * 3600 + n(mi) * 60 + n(s)


class Problem(Exception):
    def __init__(self, status, title, detail=None):
        super().__init__(title)
        self.status, self.title, self.detail = status, title, detail


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tape-rest-test/1"

    def log_message(self, fmt, *args):
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def subject(self):
        try:
            cert = self.connection.getpeercert()
        except (ValueError, OSError):
            return None
        if not cert:
            return None
        short = {"domainComponent": "DC", "commonName": "CN", "organizationName": "O",
                 "organizationalUnitName": "OU", "countryName": "C"}
        return "/" + "/".join("%s=%s" % (short.get(k, k), v) for rdn in cert.get("subject", ()) for k, v in rdn)

    def bearer(self):
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def authorized(self):
        return self.subject() is not None or self.bearer() in MACAROONS

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def json_body(self, raw):
        try:
            return json.loads(raw or b"null")
        except ValueError:
            raise Problem(400, "JSON Validation error", "the body is not JSON")

    def send(self, status, body=b"", content_type="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def problem(self, p):
        body = {"status": p.status, "title": p.title}
        if p.detail:
            body["detail"] = p.detail
        self.send(p.status, body, "application/problem+json")

    def record(self, raw):
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        with LOCK:
            LOG.append({"method": self.command, "path": self.path, "body": parsed,
                        "subject": self.subject(), "time": time.time()})

    def dispatch(self):
        raw = self.body()
        if not self.path.startswith("/_control"):
            self.record(raw)
        try:
            self.route(raw)
        except Problem as p:
            self.problem(p)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_COPY = do_OPTIONS = do_PROPFIND = dispatch

    # -- routes -----------------------------------------------------------------------------
    def route(self, raw):
        path = self.path.split("?", 1)[0]
        if path.startswith("/_control"):
            return self.control(path, raw)
        if path == "/.well-known/wlcg-tape-rest-api" and self.command == "GET":
            host = self.headers.get("Host", "localhost:%d" % ARGS.port)
            return self.send(200, {
                "sitename": "ftsd-test-tape",
                "description": "WLCG Tape REST API test storage of ftsd",
                "endpoints": [{"uri": "https://%s%s" % (host, API), "version": "v1", "metadata": {}}],
            })
        if path.startswith(API + "/"):
            if not self.authorized():
                raise Problem(401, "Unauthorized", "a client certificate or token is required")
            # gfal2 writes `/stage/` and `/archiveinfo/`: trailing slashes are the same resource.
            return self.api(path[len(API):].rstrip("/"), raw)
        return self.data(path, raw)

    def api(self, tail, raw):
        now = time.time()
        if tail == "/stage" and self.command == "POST":
            return self.stage(self.json_body(raw), now)
        m = re.fullmatch(r"/stage/([^/]+)(/cancel)?", tail)
        if m:
            with LOCK:
                req = REQUESTS.get(m.group(1))
                if req is None:
                    raise Problem(404, "Not found", "no stage request %s" % m.group(1))
                if m.group(2) and self.command == "POST":
                    paths = self.paths(self.json_body(raw))
                    known = {f["path"] for f in req["files"]}
                    for p in paths:
                        if p not in known:
                            raise Problem(400, "File missing from stage request",
                                          "The file %s does not belong to the STAGE request %s. "
                                          "No modification has been made to this request." % (p, req["id"]))
                    for f in req["files"]:
                        if f["path"] in paths and f["state"] in ("SUBMITTED", "STARTED"):
                            f.update(state="CANCELLED", finishedAt=int(now))
                    return self.send(200, b"")
                if not m.group(2) and self.command == "GET":
                    files = [file_state(req, f, now) for f in req["files"]]
                    out = {"id": req["id"], "createdAt": req["createdAt"], "startedAt": req["createdAt"], "files": files}
                    if all(f["state"] in ("COMPLETED", "FAILED", "CANCELLED") for f in files):
                        out["completedAt"] = max(f.get("finishedAt", req["createdAt"]) for f in files)
                    return self.send(200, out)
                if not m.group(2) and self.command == "DELETE":
                    for f in req["files"]:
                        if f["state"] in ("SUBMITTED", "STARTED"):
                            f.update(state="CANCELLED", finishedAt=int(now))
                    del REQUESTS[req["id"]]
                    return self.send(200, b"")
        m = re.fullmatch(r"/release/([^/]+)", tail)
        if m and self.command == "POST":
            with LOCK:
                req = REQUESTS.get(m.group(1))
                if req is None:
                    raise Problem(404, "Not found", "no stage request %s" % m.group(1))
                for p in self.paths(self.json_body(raw)):
                    e = entry(p)
                    e["pins"] = max(0, e["pins"] - 1)
                    if e["pins"] == 0:
                        e["online_until"] = 0.0
                return self.send(200, b"")
        if tail == "/archiveinfo" and self.command == "POST":
            paths = self.paths(self.json_body(raw))
            with LOCK:
                return self.send(200, [self.archiveinfo(p, now) for p in paths])
        raise Problem(404 if self.command in ("GET", "POST", "DELETE") else 405, "Not found")

    def paths(self, body):
        paths = body.get("paths") if isinstance(body, dict) else None
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise Problem(400, "JSON Validation error", "paths - Field does not exist or is not a valid non-empty array")
        return [collapse(p) for p in paths]

    def stage(self, body, now):
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, list) or not files:
            raise Problem(400, "JSON Validation error", "files - Field does not exist or is not a valid non-empty array")
        entries = []
        with LOCK:
            for f in files:
                if not isinstance(f, dict) or not isinstance(f.get("path"), str):
                    raise Problem(400, "JSON Validation error", "files.path - Field does not exist or is not a string")
                lifetime = ARGS.default_lifetime
                if "diskLifetime" in f:
                    lifetime = duration_seconds(str(f["diskLifetime"]))
                    if lifetime is None:
                        raise Problem(400, "JSON Validation error",
                                      "diskLifetime - %r is not an ISO 8601 duration" % f["diskLifetime"])
                path = collapse(f["path"])
                if entry(path).get("deny"):
                    raise Problem(403, "Forbidden", "Permission denied: %s" % path)
                entries.append({"path": path, "state": "SUBMITTED", "lifetime": lifetime})
            rid = str(uuid.uuid4())
            REQUESTS[rid] = {"id": rid, "created": now, "createdAt": int(now), "files": entries}
        self.send(201, {"requestId": rid}, headers=[("Location", "https://%s%s/stage/%s" % (
            self.headers.get("Host", "localhost"), API, rid))])

    def archiveinfo(self, path, now):
        e = entry(path)
        if e.get("archive_error"):
            return {"path": path, "error": e["archive_error"]}
        if e.get("locality"):
            return {"path": path, "locality": e["locality"]}
        if e.get("lost"):
            return {"path": path, "locality": "LOST"}
        if not os.path.isfile(local(path)):
            return {"path": path, "error": "USER ERROR: file does not exist or is not accessible to you"}
        disk, tape = online(path, now), on_tape(path, now)
        locality = "DISK_AND_TAPE" if disk and tape else "TAPE" if tape else "DISK" if disk else "NONE"
        return {"path": path, "locality": locality}

    def data(self, path, raw):
        if not self.authorized():
            raise Problem(401, "Unauthorized")
        p = local(path)
        now = time.time()
        if self.command == "POST" and self.headers.get("Content-Type", "").startswith("application/macaroon-request"):
            token = secrets.token_urlsafe(24)
            with LOCK:
                MACAROONS.add(token)
            return self.send(200, {"macaroon": token, "expires_in": 3600})
        if self.command in ("GET", "HEAD"):
            if os.path.isdir(p):
                return self.send(200, b"", "text/plain")
            if not os.path.isfile(p):
                raise Problem(404, "Not found")
            with open(p, "rb") as fh:
                content = fh.read()
            headers = []
            if "adler32" in self.headers.get("Want-Digest", "").lower():
                headers.append(("Digest", "adler32=%08x" % (zlib.adler32(content) & 0xFFFFFFFF)))
            if self.command == "HEAD":
                self.send_response(200)
                self.send_header("Content-Length", str(len(content)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                return
            with LOCK:
                if not online(path, now):
                    raise Problem(503, "Service Unavailable", "the file is on tape only: stage it first")
            return self.send(200, content, "application/octet-stream", headers)
        if self.command == "PUT":
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as fh:
                fh.write(raw)
            with LOCK:
                e = entry(path)
                e.update(written_at=now, on_tape=False)
            return self.send(201, b"")
        if self.command == "DELETE":
            if not os.path.isfile(p):
                raise Problem(404, "Not found")
            os.remove(p)
            with LOCK:
                PATHS.pop(collapse(path), None)
            return self.send(204, b"")
        if self.command == "MKCOL":
            os.makedirs(p, exist_ok=True)
            return self.send(201, b"")
        raise Problem(405, "Method Not Allowed", "%s is not supported here" % self.command)

    do_MKCOL = dispatch

    def control(self, path, raw):
        if path == "/_control/log" and self.command == "GET":
            with LOCK:
                return self.send(200, list(LOG))
        if path == "/_control" and self.command == "POST":
            body = self.json_body(raw)
            with LOCK:
                e = entry(body.pop("path"))
                e.update(body)
            return self.send(200, b"")
        raise Problem(404, "Not found")


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--capath", required=True)
    parser.add_argument("--stage-delay", type=float, default=2.0)
    parser.add_argument("--archive-delay", type=float, default=2.0)
    parser.add_argument("--default-lifetime", type=float, default=3600.0)
    parser.add_argument("--parent", type=int, help="exit when this process is gone (a shared server outlives no test run)")
    ARGS = parser.parse_args()
    if ARGS.parent:
        def watch():
            while True:
                try:
                    os.kill(ARGS.parent, 0)
                except OSError:
                    os._exit(0)
                time.sleep(0.5)
        threading.Thread(target=watch, daemon=True).start()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ARGS.cert, ARGS.key)
    context.load_verify_locations(capath=ARGS.capath)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.verify_flags |= ssl.VERIFY_ALLOW_PROXY_CERTS
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.serve_forever()


if __name__ == "__main__":
    main()
