#!/usr/bin/python3
"""A tape back-end for XRootD's prepare plugin (libXrdOfsPrepGPI), python3 standard library only.

XRootD runs this program for every prepare request it admits (`ofs.preplib
libXrdOfsPrepGPI.so -admit stage,query,cancel,evict -run <this>`), with the arguments
`[options] -- <request id> <stage|query|cancel|evict> <path>...`; what a query prints is the
answer the client gets. That answer is the JSON that EOS+CTA serves and gfal2's xrootd plugin
reads for bring-online polls and archive polls (`request_id`, per path `path_exists`,
`online`, `requested`, `has_reqid`, `req_time`, `on_tape`, `error_text`).

The tape it emulates, under the instance directory (this program's directory):
- files under `data/tape/` are on tape only (offline) until a stage request for them has
  waited STAGE_DELAY seconds; every other file is on disk;
- a file is on tape (archived) ARCHIVE_DELAY seconds after it was last written, never when
  its name contains `never-archived`;
- `tape/log` gets one JSON line per request (request id, request name, paths), so tests can
  see which requests reached the storage.
"""

import json
import os
import sys
import time

HOME = os.path.dirname(os.path.abspath(sys.argv[0]))
DATA = os.path.join(HOME, "data")
STATE = os.path.join(HOME, "tape")
STAGE_DELAY = 4.0
ARCHIVE_DELAY = 4.0


def local(path):
    return os.path.join(DATA, path.split("?", 1)[0].lstrip("/"))


def request_file(rid):
    return os.path.join(STATE, "request-" + rid.replace("/", "_"))


def load(rid):
    try:
        with open(request_file(rid)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def save(rid, request):
    tmp = request_file(rid) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(request, f)
    os.replace(tmp, request_file(rid))


def answer(rid, path, request, now):
    """One file of a query answer."""
    path = path.split("?", 1)[0]
    exists = os.path.isfile(local(path))
    asked = request.get(path)
    staged = asked is not None and not asked.get("canceled") and now >= asked["at"] + STAGE_DELAY
    tape_only = path.startswith("/tape/")
    written = os.path.getmtime(local(path)) if exists else now
    return {
        "path": path,
        "path_exists": exists,
        "online": exists and (not tape_only or staged),
        "requested": asked is not None and not asked.get("canceled"),
        "has_reqid": asked is not None,
        "req_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(asked["at"])) if asked else "",
        "on_tape": exists and "never-archived" not in path and now >= written + ARCHIVE_DELAY,
        "error_text": "" if exists else "file does not exist: " + path,
    }


def main():
    args = sys.argv[1:]
    args = args[args.index("--") + 1:] if "--" in args else args
    rid, name, paths = args[0], args[1], args[2:]
    os.makedirs(STATE, exist_ok=True)
    now = time.time()
    with open(os.path.join(STATE, "log"), "a") as log:
        log.write(json.dumps({"id": rid, "request": name, "paths": paths}) + "\n")
    if name == "stage":
        request = load(rid)
        for p in paths:
            request[p.split("?", 1)[0]] = {"at": now}
        save(rid, request)
    elif name == "cancel":
        request = load(rid)
        for p in paths or list(request):
            if p in request:
                request[p]["canceled"] = True
        save(rid, request)
    elif name == "query":
        request = load(rid)
        print(json.dumps({"request_id": rid, "responses": [answer(rid, p, request, now) for p in paths]}))
    # evict: nothing is pinned here; the log line is what tests look for.


if __name__ == "__main__":
    main()
