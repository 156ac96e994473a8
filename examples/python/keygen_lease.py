#!/usr/bin/env python3
"""Acquire a keygen-agent lease, print the entitlements, hold it until
interrupted. Standard library only; see docs/protocol.md. With
--public-key (the account's Ed25519 key) and --fingerprint (this machine's),
the lease's evidence is verified as docs/protocol.md "Verifying a lease"
describes; that needs the "cryptography" package or PyNaCl.

Exit codes: 0 released on Ctrl-C, 4 agent unreachable, 5 no free seat or
lease revoked, 6 the lease's evidence does not verify, 7 verification asked
for but no Ed25519 library installed, 1 other errors.
"""
import argparse
import base64
import binascii
import email.utils
import hashlib
import itertools
import json
import os
import re
import signal
import socket
import sys
import time
from datetime import datetime

PROCESS_LOADED = time.time()  # no evidence about this process is signed earlier

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


class VerifyError(Exception):
    def __init__(self, check, detail):
        self.check = check
        super().__init__("%s: %s" % (check, detail))


def ed25519_verifier(key_text):
    """Returns verify(sig, msg) -> bool for the account key, or None when
    neither cryptography nor PyNaCl is installed."""
    key_text = key_text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", key_text):
        raw = bytes.fromhex(key_text)
    else:
        if key_text.startswith("-----BEGIN"):
            key_text = "".join(l for l in key_text.splitlines() if not l.startswith("-----"))
        der = base64.b64decode(key_text)
        raw = der[-32:]  # an Ed25519 SPKI is a 12-byte prefix and the raw key
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        pub = Ed25519PublicKey.from_public_bytes(raw)

        def verify(sig, msg):
            try:
                pub.verify(sig, msg)
                return True
            except InvalidSignature:
                return False
        return verify
    except ImportError:
        pass
    try:
        from nacl.exceptions import BadSignatureError
        from nacl.signing import VerifyKey
        vk = VerifyKey(raw)

        def verify(sig, msg):
            try:
                vk.verify(msg, sig)
                return True
            except (BadSignatureError, ValueError):
                return False
        return verify
    except ImportError:
        return None


def own_process():
    """(pid, start time) as the agent writes them; the start time is read on
    Linux only (field 22 of /proc/self/stat)."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        return str(os.getpid()), stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return str(os.getpid()), None


def rfc3339(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def b64(s):
    try:
        return base64.b64decode(s or "", validate=True)
    except (binascii.Error, ValueError):
        return b""


def verify_lease(lease, verify, fingerprints, components, max_age=0, require_online=False):
    """The checks of docs/protocol.md "Verifying a lease"."""
    skew, now = 300, time.time()
    ev = lease.get("evidence") or {}
    status = ev.get("status")
    if status not in ("signed", "offline", "pending"):
        raise VerifyError("evidence", "the lease carries no evidence")
    if status == "pending":
        raise VerifyError("pending", "Keygen has not confirmed the lease yet")
    if status == "offline" and require_online:
        raise VerifyError("offline", "granted offline")
    text = (ev.get("machine_file") or "").strip()
    begin, end = "-----BEGIN MACHINE FILE-----", "-----END MACHINE FILE-----"
    if not (text.startswith(begin) and text.endswith(end)):
        raise VerifyError("machine_file", "no machine file")
    try:
        env = json.loads(b64(re.sub(r"\s+", "", text[len(begin):-len(end)])))
    except ValueError:
        raise VerifyError("machine_file", "the envelope is not JSON")
    if env.get("alg") != "base64+ed25519":
        raise VerifyError("machine_file", "algorithm %s" % env.get("alg"))
    if not verify(b64(env.get("sig")), ("machine/" + env.get("enc", "")).encode()):
        raise VerifyError("machine_file", "the signature does not verify")
    mf = json.loads(b64(env["enc"]))
    data, meta = mf.get("data") or {}, mf.get("meta") or {}
    if data.get("type") != "machines":
        raise VerifyError("machine_file", "not a machine document")
    expiry = rfc3339(meta["expiry"]) if meta.get("expiry") else None
    if expiry is not None and now > expiry:
        raise VerifyError("expired", "machine file expired %s" % meta["expiry"])
    if meta.get("issued") and rfc3339(meta["issued"]) - now > skew:
        raise VerifyError("expired", "machine file issued in the future")
    comps = [r["attributes"].get("fingerprint") for r in mf.get("included") or [] if r.get("type") == "components"]
    if data.get("attributes", {}).get("fingerprint") not in fingerprints and not any(c in components for c in comps):
        raise VerifyError("fingerprint", "the machine file is for another machine")
    if status == "offline":
        return {"offline": True, "machine": data.get("id")}
    p = ev.get("process") or {}
    body = b64(p.get("body"))
    if p.get("digest") != "sha-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode():
        raise VerifyError("digest", "the Digest does not match the body")
    params = {}
    for k, v in re.findall(r'(\w+)="([^"]*)"', p.get("signature") or ""):
        params.setdefault(k.lower(), v)
    if params.get("algorithm", "ed25519") != "ed25519":
        raise VerifyError("signature", "algorithm %s" % params["algorithm"])
    signing = "(request-target): %s\nhost: %s\ndate: %s\ndigest: %s" % (
        p.get("request_target"), p.get("host"), p.get("date"), p.get("digest"))
    if not verify(b64(params.get("signature")), signing.encode()):
        raise VerifyError("signature", "the signature does not verify")
    try:
        d = json.loads(body)["data"]
    except (ValueError, KeyError, TypeError):
        raise VerifyError("document", "not a process document")
    if not isinstance(d, dict) or d.get("type") != "processes":
        raise VerifyError("document", "not a process document")
    attrs, rel = d.get("attributes") or {}, d.get("relationships") or {}
    pid, start = own_process()
    got = str(attrs.get("pid")).split("@")
    if got[0] != pid or (start is not None and (len(got) < 2 or got[1] != start)) or attrs.get("status") == "DEAD":
        raise VerifyError("process", "the process is %s, not this one" % attrs.get("pid"))
    if (attrs.get("metadata") or {}).get("leaseId") != lease.get("lease_id"):
        raise VerifyError("lease", "another lease")
    mid = ((rel.get("machine") or {}).get("data") or {}).get("id")
    lid = ((rel.get("license") or {}).get("data") or {}).get("id")
    mlid = (((data.get("relationships") or {}).get("license") or {}).get("data") or {}).get("id")
    if mid != data.get("id") or (lid and mlid and lid != mlid):
        raise VerifyError("machine", "the process is on another machine")
    try:
        date = email.utils.parsedate_to_datetime(p.get("date")).timestamp()
    except (TypeError, ValueError):
        raise VerifyError("date", "bad Date %r" % p.get("date"))
    if (date - now > skew or PROCESS_LOADED - date > skew or (max_age > 0 and now - date > max_age + skew)
            or (expiry is not None and date > expiry)):
        raise VerifyError("date", "signed %s" % p.get("date"))
    return {"offline": False, "machine": data.get("id"), "process": d.get("id")}


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
    ap.add_argument("--entitlement", action="append", default=[],
                    help="entitlement code the license must hold (repeatable)")
    ap.add_argument("--public-key", default=os.environ.get("KEYGEN_PUBLIC_KEY", ""))
    ap.add_argument("--fingerprint", action="append", default=[])
    ap.add_argument("--component", action="append", default=[])
    ap.add_argument("--max-age", type=int, default=0, help="seconds")
    ap.add_argument("--require-online", action="store_true")
    ap.add_argument("--use", type=int, default=0, help="record this many metered uses (license.use)")
    args = ap.parse_args()
    verify = None
    if args.public_key:
        verify = ed25519_verifier(args.public_key)
        if verify is None:
            print("cannot verify the lease: install the 'cryptography' package or PyNaCl", file=sys.stderr)
            return 7

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
            "app": args.app, "app_version": args.app_version, "wait_ms": args.wait_ms,
            "confirm": verify is not None, "entitlements": args.entitlement})
    except AgentError as e:
        if e.code == "PROCESS_LIMIT_EXCEEDED":
            print("no free seat: %s of %s in use" % (e.data.get("count"), e.data.get("limit")), file=sys.stderr)
            return 5
        if e.code == "ENTITLEMENTS_MISSING":
            print("the license lacks: %s" % ", ".join(e.data.get("missing") or []), file=sys.stderr)
            return 5
        print("refused: %s" % e, file=sys.stderr)
        return 5 if e.code in ("LICENSE_INVALID", "NOT_ACTIVATED", "OFFLINE_EXPIRED") else 1
    if verify is not None:
        try:
            r = verify_lease(lease, verify, args.fingerprint, args.component, args.max_age, args.require_online)
        except VerifyError as e:
            print("lease refused: %s" % e, file=sys.stderr)
            try:
                agent.call("lease.release", {"lease_id": lease["lease_id"]})
            except (AgentError, ConnectionError):
                pass
            agent.close()
            return 6
        print("verified offline: machine file only" if r["offline"] else "verified %s" % r["process"])
    try:
        # A policy that requires check-ins: when the next one is due.
        st = agent.call("license.status", {})
        if st.get("next_check_in"):
            print("next check-in: %s" % st["next_check_in"])
    except AgentError:
        pass  # an older agent: no status details
    print("acquired %s" % lease["lease_id"])
    print("entitlements: %s" % ", ".join(lease.get("entitlements") or []))
    if args.use > 0:
        # Metered uses (license.use): Keygen counts them against maxUses.
        try:
            u = agent.call("license.use", {"count": args.use})
        except AgentError as e:
            if e.code != "USES_EXCEEDED":
                raise
            print("no uses left: %s of %s used" % (e.data.get("uses"), e.data.get("limit")), file=sys.stderr)
            try:
                agent.call("lease.release", {"lease_id": lease["lease_id"]})
            except (AgentError, ConnectionError):
                pass
            agent.close()
            return 5
        print("uses: %s of %s%s" % (u.get("uses"), u.get("max_uses", "unlimited"),
                                     " (offline, %s queued)" % u.get("queued") if u.get("offline") else ""))
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
