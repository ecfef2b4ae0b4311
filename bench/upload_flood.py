#!/usr/bin/env python3
"""Upload flood (issue 22): one tenant sends many large uploads at once while another tenant
sends small resizes; how much memory does `resizer dev` take, and is the other tenant served?

  bench/upload_flood.py [--resizer target/release/resizer] [--uploads 64] [--rounds 3]
                        [--small-clients 2] [--set KEY=VALUE ...] [--lab DIR]

With --lab DIR the flood goes to one api node of a running `resizer lab up --dir DIR` (its
public port directly, over TLS checked against the lab's CA when the lab runs TLS), and the
peak RSS is that node's; tenants are made through the lab's admin API.

1. The input: a ~30 MB JPEG of noise (4600x3300, quality 100), made once and kept in /tmp:
   Python writes a noise PNG, and a helper `resizer dev` (byte limit raised) converts it.
2. Starts `resizer dev` (fresh data directory, free ports, `--set` passed on) and a second
   tenant through the admin API.
3. `--rounds` times, one round after the other: sends `--uploads` uploads of the JPEG at once
   from the demo tenant (`width=512`, JPEG), each over its own connection, reading the answer as
   soon as it comes (an early refusal stops the sending); meanwhile `--small-clients`
   connections of the other tenant send examples/sample.jpg (`width=200`) one after the other
   until the last round is answered.
4. Prints the server's peak RSS (VmHWM of /proc/<pid>/status) and its RSS before the flood, the
   uploads' statuses, and the other tenant's statuses and latency p50/p99, as text and one JSON
   line.

Standard library only. The server must be a `resizer` binary (a release build for figures).
"""
from __future__ import annotations

import argparse
import http.client
import ssl
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "sample.jpg"
INPUT = Path("/tmp/upload-flood-4600x3300-q100.jpg")
WIDTH, HEIGHT = 4600, 3300


def noise_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")


class Target:
    """What the flood needs of a server: its addresses, the admin API, its process's figures."""

    api: str
    admin: str
    admin_token: str
    admin_tls = None
    pid: int

    def admin_post(self, path: str, body: dict) -> dict:
        conn = http_connection(self.admin, self.admin_tls, 30)
        conn.request("POST", path, json.dumps(body),
                     {"authorization": f"Bearer {self.admin_token}", "content-type": "application/json"})
        r = conn.getresponse()
        text = r.read()
        if r.status != 201:
            raise SystemExit(f"admin {path}: {r.status} {text!r}")
        return json.loads(text)

    def status(self, field: str) -> int:
        """A /proc/<pid>/status figure in KiB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0


class Dev(Target):
    """A `resizer dev` process on free loopback ports in its own directory."""

    def __init__(self, resizer: str, sets: list[str]):
        self.dir = Path(tempfile.mkdtemp(prefix="upload-flood-"))
        data = self.dir / "data"
        cmd = [resizer, "dev", "--data-dir", str(data), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
        for kv in sets:
            cmd += ["--set", kv]
        self.log = open(self.dir / "server.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        self.pid = self.proc.pid
        started = time.monotonic()
        while not (data / "dev.json").exists():
            if self.proc.poll() is not None:
                raise SystemExit(f"resizer dev exited: {(self.dir / 'server.log').read_text()}")
            if time.monotonic() - started > 30:
                raise SystemExit("resizer dev did not start within 30 s")
            time.sleep(0.05)
        time.sleep(0.1)  # dev.json is written whole, but give the file a moment to be complete
        info = json.loads((data / "dev.json").read_text())
        self.api = info["api_url"].removeprefix("http://")
        self.admin = info["admin_url"].removeprefix("http://")
        self.admin_token = info["admin_token"]
        self.key = info["demo_api_key"]

    tls = admin_tls = None  # resizer dev serves plain HTTP

    def tenant_key(self, name: str) -> str:
        tenant = self.admin_post("/v1/tenants", {"name": name, "limits": {}})
        return self.admin_post(f"/v1/tenants/{tenant['id']}/keys", {"label": "bench"})["key"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Lab(Target):
    """One api node of a running lab (`resizer lab up --dir DIR`): flooded directly, its RSS read."""

    def __init__(self, directory: str, node: str = "api-0"):
        info = json.loads((Path(directory) / "cluster.json").read_text())
        fields = info["fields"]
        component = next(c for c in info["components"] if c["name"] == node)
        url = component["urls"]["http"]
        self.tls = None
        if url.startswith("https://"):
            self.tls = ssl.create_default_context(cafile=fields["tls_ca"])
        self.api = url.split("://", 1)[1]
        admin = fields["admin_url"]
        self.admin = admin.split("://", 1)[1]
        self.admin_tls = ssl.create_default_context(cafile=fields["tls_ca"]) if admin.startswith("https://") else None
        self.admin_token = fields["admin_token"]
        self.key = fields["demo_api_key"]
        self.pid = component["pid"]

    def tenant_key(self, name: str) -> str:
        # Its rate limit out of the way: what is measured is the flood's effect, not the limiter.
        limits = {"rate_per_sec": 1000000, "burst": 1000000}
        tenant = self.admin_post("/v1/tenants", {"name": f"{name}-{os.getpid()}", "limits": limits})
        key = self.admin_post(f"/v1/tenants/{tenant['id']}/keys", {"label": "bench"})["key"]
        # The key reaches the api node through the identity bucket: wait until it is known there.
        started = time.monotonic()
        while time.monotonic() - started < 10:
            conn = http_connection(self.api, self.tls, 10)
            conn.request("GET", "/v1/usage", headers={"authorization": f"Bearer {key}"})
            if conn.getresponse().status not in (401, 403):
                return key
            time.sleep(0.1)
        raise SystemExit("the new tenant's key did not reach the api node within 10 s")

    def stop(self):
        pass  # the lab is the caller's


def http_connection(address: str, tls, timeout: float) -> http.client.HTTPConnection:
    host, port = address.rsplit(":", 1)
    if tls is None:
        return http.client.HTTPConnection(host, int(port), timeout=timeout)
    return http.client.HTTPSConnection(host, int(port), timeout=timeout, context=tls)


def make_input(resizer: str) -> bytes:
    if INPUT.exists():
        return INPUT.read_bytes()
    png = noise_png(WIDTH, HEIGHT)
    helper = Dev(resizer, [f"limits.max_input_bytes={len(png) + (1 << 20)}"])
    try:
        host, port = helper.api.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        conn.request("POST", f"/v1/resize?width={WIDTH}&format=jpeg&quality=100", png,
                     {"authorization": f"Bearer {helper.key}"})
        r = conn.getresponse()
        jpeg = r.read()
        if r.status != 200:
            raise SystemExit(f"making the input: {r.status} {jpeg[:300]!r}")
    finally:
        helper.stop()
    INPUT.write_bytes(jpeg)
    return jpeg


def upload(api: str, tls, key: str, body: bytes, start: threading.Barrier, out: list, i: int):
    """One large upload over its own connection; stops sending as soon as an answer arrives."""
    host, port = api.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=host)
    head = (f"POST /v1/resize?width=512&format=jpeg HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    start.wait()
    began = time.monotonic()
    sent = 0
    status = None
    early = b""
    try:
        sock.sendall(head)
        view = memoryview(body)
        while sent < len(body):
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and tls is not None:
                # Over TLS the socket also turns readable for records that carry no answer (the
                # server's session tickets): only application data is an answer.
                sock.setblocking(False)
                try:
                    early = sock.recv(4096)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    readable = []
                finally:
                    sock.setblocking(True)
                    sock.settimeout(60)
            if readable:
                break  # answered before the whole body was sent
            sent += sock.send(view[sent:sent + (256 << 10)])
    except OSError:
        pass  # the server closed after answering: read the answer below if it came
    try:
        answer = early
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        parts = answer.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    except OSError:
        pass
    sock.close()
    out[i] = (status if status is not None else "reset", time.monotonic() - began, sent)


def small_client(api: str, tls, key: str, body: bytes, stop: threading.Event, out: list):
    conn = http_connection(api, tls, 60)
    while not stop.is_set():
        began = time.monotonic()
        try:
            conn.request("POST", "/v1/resize?width=200&format=jpeg", body, {"authorization": f"Bearer {key}"})
            r = conn.getresponse()
            r.read()
            status = r.status
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http_connection(api, tls, 60)
            status = "error"
        out.append((status, time.monotonic() - began))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered) + 0.5) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resizer", default=str(ROOT / "target" / "release" / "resizer"))
    ap.add_argument("--uploads", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="floods one after the other (default 3)")
    ap.add_argument("--small-clients", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to resizer dev")
    ap.add_argument("--lab", metavar="DIR", help="flood api-0 of the lab running in DIR instead of a resizer dev")
    args = ap.parse_args()

    image = make_input(args.resizer)
    small = SAMPLE.read_bytes()
    dev = Lab(args.lab) if args.lab else Dev(args.resizer, args.set)
    try:
        other_key = dev.tenant_key("other")
        # Warm up both paths once, so the baseline includes the pool and the spool.
        for key, body in ((dev.key, small), (other_key, small)):
            conn = http_connection(dev.api, dev.tls, 60)
            conn.request("POST", "/v1/resize?width=200&format=jpeg", body, {"authorization": f"Bearer {key}"})
            conn.getresponse().read()
        rss_before = dev.status("VmRSS")

        stop = threading.Event()
        small_results: list = []
        smalls = [threading.Thread(target=small_client, args=(dev.api, dev.tls, other_key, small, stop, small_results))
                  for _ in range(args.small_clients)]
        results: list = []
        began = time.monotonic()
        for round_ in range(args.rounds):
            answers: list = [None] * args.uploads
            start = threading.Barrier(args.uploads + 1)
            flood = [threading.Thread(target=upload, args=(dev.api, dev.tls, dev.key, image, start, answers, i))
                     for i in range(args.uploads)]
            for t in flood:
                t.start()
            start.wait()
            if round_ == 0:
                for t in smalls:
                    t.start()
            for t in flood:
                t.join()
            results += answers
        flood_wall = time.monotonic() - began
        stop.set()
        for t in smalls:
            t.join()
        hwm = dev.status("VmHWM")
    finally:
        dev.stop()

    statuses = Counter(str(r[0]) for r in results)
    times = [r[1] for r in results]
    answered_early = sum(1 for r in results if r[2] < len(image))
    small_ok = [s for st, s in small_results if st == 200]
    small_statuses = Counter(str(st) for st, _ in small_results)
    summary = {
        "resizer": args.resizer,
        "lab": args.lab,
        "set": args.set,
        "input_bytes": len(image),
        "uploads": args.uploads,
        "rounds": args.rounds,
        "rss_before_mib": round(rss_before / 1024, 1),
        "peak_rss_mib": round(hwm / 1024, 1),
        "upload_statuses": dict(statuses),
        "uploads_answered_before_their_body_was_sent": answered_early,
        "upload_seconds_p50": round(percentile(times, 0.5), 3),
        "upload_seconds_max": round(max(times), 3),
        "flood_seconds": round(flood_wall, 2),
        "other_tenant_statuses": dict(small_statuses),
        "other_tenant_p50_ms": round(percentile(small_ok, 0.5) * 1e3, 1),
        "other_tenant_p99_ms": round(percentile(small_ok, 0.99) * 1e3, 1),
    }
    print(f"input {len(image)} bytes; {args.rounds} rounds of {args.uploads} uploads at once from one tenant; "
          f"--set {args.set}")
    print(f"server RSS before {summary['rss_before_mib']} MiB, peak (VmHWM) {summary['peak_rss_mib']} MiB")
    print(f"uploads: {dict(statuses)} ({answered_early} answered before their whole body was sent), "
          f"p50 {summary['upload_seconds_p50']} s, max {summary['upload_seconds_max']} s, "
          f"all rounds {summary['flood_seconds']} s")
    print(f"other tenant: {dict(small_statuses)}, p50 {summary['other_tenant_p50_ms']} ms, "
          f"p99 {summary['other_tenant_p99_ms']} ms")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
