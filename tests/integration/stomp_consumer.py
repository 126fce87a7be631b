"""A STOMP consumer written with PyPI stomp.py, for tests/integration/messages.rs.

Usage: python stomp_consumer.py HOST PORT VHOST USER PASS OUT DEST...

Subscribes to every DEST (ack auto, like Rucio's receiver) and appends one JSON line per
message to OUT: {"destination", "headers", "body"}. Writes OUT + ".ready" once subscribed.
Reconnects and subscribes again whenever the connection drops (a broker restart). Exits when
its stdin closes (the test process ended).
"""
import json
import os
import sys
import threading
import time

import stomp

host, port, vhost, user, password, out = sys.argv[1:7]
destinations = sys.argv[7:]
lock = threading.Lock()
connected = threading.Event()


class Listener(stomp.ConnectionListener):
    def on_message(self, frame):
        line = json.dumps({"destination": frame.headers.get("destination"),
                           "headers": frame.headers, "body": frame.body})
        with lock, open(out, "a") as f:
            f.write(line + "\n")

    def on_disconnected(self):
        connected.clear()


def connect():
    conn = stomp.Connection12([(host, int(port))], vhost=vhost, heartbeats=(0, 0))
    conn.set_listener("", Listener())
    conn.connect(user, password, wait=True)
    for i, d in enumerate(destinations):
        conn.subscribe(destination=d, id=str(i), ack="auto")
    connected.set()
    return conn


def keep_connected():
    while True:
        if not connected.is_set():
            try:
                connect()
                open(out + ".ready", "w").close()
            except Exception as e:  # broker down: try again
                sys.stderr.write("consumer: %s\n" % e)
        time.sleep(0.2)


threading.Thread(target=keep_connected, daemon=True).start()
sys.stdin.read()
os._exit(0)
