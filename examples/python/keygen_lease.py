#!/usr/bin/env python3
"""Acquire a keygen-agent lease, print the entitlements, hold it until
interrupted. Standard library only; see docs/protocol.md.

Exit codes: 0 released on Ctrl-C, 4 agent unreachable, 5 no free seat or
lease revoked, 1 other errors.
"""
import argparse
import itertools
import json
import os
import signal
import socket
import sys

PROTOCOL = 1


def default_path():
    if os.environ.get("KEYGEN_AGENT_SOCKET"):
        return os.environ["KEYGEN_AGENT_SOCKET"]
    if sys.platform == "win32":
        return r"\\.\pipe\keygen-agent"
    if sys.platform == "darwin":
        return "/var/run/keygen-agent/agent.sock"
    return "/run/keygen-agent/agent.sock"


class AgentError(Exception):
    def __init__(self, err):
        data = err.get("data") or {}
        self.code = data.get("code", "INTERNAL")
        self.data = data
        super().__init__("%s (%s)" % (err.get("message", ""), self.code))


class Agent:
    """One long-lived connection; the lease lives as long as it does."""

    def __init__(self, path):
        if sys.platform == "win32":
            # A named pipe opens like a file (byte mode, unbuffered).
            self._f = open(path, "r+b", buffering=0)
            self._read, self._write = self._f.read, self._f.write
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            self._f = s
            self._read, self._write = s.recv, s.sendall
        self._buf = b""
        self._ids = itertools.count(1)
        self.notifications = []

    def close(self):
        self._f.close()

    def _line(self):
        while b"\n" not in self._buf:
            chunk = self._read(65536)
            if not chunk:
                raise ConnectionError("the agent closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def next_message(self):
        """Blocks for the next message (a notification, here)."""
        if self.notifications:
            return self.notifications.pop(0)
        return self._line()

    def call(self, method, params=None):
        req = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            req["params"] = params
        self._write((json.dumps(req, separators=(",", ":")) + "\n").encode())
        while True:
            msg = self._line()
            if "id" not in msg:  # a notification arrived first: keep it
                self.notifications.append(msg)
                continue
            if msg["id"] != req["id"]:
                continue
            if "error" in msg:
                raise AgentError(msg["error"])
            return msg["result"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", default=default_path())
    ap.add_argument("--app", default="example-python")
    ap.add_argument("--app-version", default="1.0.0")
    ap.add_argument("--wait-ms", type=int, default=0)
    args = ap.parse_args()

    try:
        agent = Agent(args.socket)
    except OSError as e:
        print("cannot reach the agent at %s: %s" % (args.socket, e), file=sys.stderr)
        return 4
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        hello = agent.call("agent.hello", {"protocol": PROTOCOL, "client": args.app})
        if hello.get("protocol") != PROTOCOL:
            print("warning: agent speaks protocol %s" % hello.get("protocol"), file=sys.stderr)
        lease = agent.call("lease.acquire", {
            "app": args.app, "app_version": args.app_version, "wait_ms": args.wait_ms})
    except AgentError as e:
        if e.code == "PROCESS_LIMIT_EXCEEDED":
            print("no free seat: %s of %s in use" % (e.data.get("count"), e.data.get("limit")), file=sys.stderr)
            return 5
        print("refused: %s" % e, file=sys.stderr)
        return 5 if e.code in ("LICENSE_INVALID", "NOT_ACTIVATED", "OFFLINE_EXPIRED") else 1
    print("acquired %s" % lease["lease_id"])
    print("entitlements: %s" % ", ".join(lease.get("entitlements") or []))
    sys.stdout.flush()
    try:
        while True:
            msg = agent.next_message()
            method = msg.get("method")
            params = msg.get("params") or {}
            if method == "lease.revoked" and params.get("lease_id") == lease["lease_id"]:
                print("revoked: %s (%s)" % (params.get("reason"), params.get("code")))
                return 5
            if method == "license.changed":
                print("license changed: valid=%s" % params.get("valid"))
                sys.stdout.flush()
    except KeyboardInterrupt:
        agent.call("lease.release", {"lease_id": lease["lease_id"]})
        print("released")
        return 0
    except ConnectionError as e:
        print("lost the agent: %s" % e, file=sys.stderr)
        return 4
    finally:
        agent.close()


if __name__ == "__main__":
    sys.exit(main())
