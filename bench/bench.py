#!/usr/bin/env python3
"""`make bench`: tinydrop side by side with a raw TCP sink, in the same run.

Every figure is measured for tinydrop and for the baseline (bench/sink: reads
the head, writes the raw body to a file with 1 MiB reads, sync_data + folder
fsync, answers 200) with the same curl command, over loopback, interleaved
(each round runs every server on every scenario, the order rotating), each
server a fresh process per scenario; the table shows the median of the rounds.

  S1  one file (default 1 GiB) by `curl -F` (multipart POST)
  S2  the same file by `curl -T` (PUT)
  S3  1000 files of 4 KiB by `curl -F` from 8 clients, each keeping one
      connection alive (a curl config file with `next`), files per second
  S4  32 uploads of 32 MiB at once by `curl -T`: total MiB/s and the
      server's peak RSS (VmHWM of a process that served only S4)
  idle RSS (VmRSS 0.3 s after start; its private part, RssAnon, is shown
  too: the rest is the binary's and shared libraries' file pages), server
  CPU s per GiB (utime+stime from
  /proc/PID/stat over S1+S2+S4, divided by the bytes), binary size.

Every upload is checked: HTTP status, tinydrop's answered sha256 against
`sha256sum` of the source, and the sha256 of the stored file (for the sink's
multipart bodies, of the file part inside the stored raw body).

Test data is generated once per run (/dev/urandom) in a temp dir on the same
file system as the upload folders, synced before the first measurement, and
removed at the end. Clients connect from 127.0.0.1-127.0.0.8 so that the
default per-address cap (half the workers) is never what is measured.

Python 3 standard library only. `--peers` adds miniserve and dufs columns
(built by `make bench-peers` into target/peers/bin).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20
GIB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def parse_size(s):
    units = {"K": 1 << 10, "M": MIB, "G": GIB}
    return int(s[:-1]) * units[s[-1].upper()] if s[-1].upper() in units else int(s)


# ---- servers ---------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process on a fresh upload folder."""

    def __init__(self, label, kind, binary, updir, logdir):
        self.kind, self.updir = kind, updir
        os.makedirs(updir, exist_ok=True)
        self.log = open(os.path.join(logdir, f"{label}.log"), "ab")
        if kind in ("tinydrop", "sink"):
            if kind == "tinydrop":
                cmd = [binary, "--port", "0", "--bind", "127.0.0.1", updir]
            else:
                cmd = [binary, "--port", "0", updir]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log)
            line = self.proc.stdout.readline().decode()
            if "listening on" not in line:
                raise SystemExit(f"{kind} did not start: {line!r}")
            self.port = int(line.strip().rstrip("/").rsplit(":", 1)[1])
        else:
            self.port = free_port()
            if kind == "miniserve":
                cmd = [binary, "--upload-files", "-i", "127.0.0.1", "-p", str(self.port), updir]
            else:  # dufs
                cmd = [binary, "--allow-upload", "-b", "127.0.0.1", "-p", str(self.port), updir]
            self.proc = subprocess.Popen(
                cmd, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL
            )
            deadline = time.time() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline or self.proc.poll() is not None:
                        raise SystemExit(f"{kind} did not start")
                    time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def cpu(self):
        """utime + stime of the server, seconds (all threads)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def status_kib(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise KeyError(key)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


# ---- how each server takes an upload ---------------------------------------

FORM = {"tinydrop", "sink", "miniserve"}
PUT = {"tinydrop", "sink", "dufs"}


def form_args(kind, url, path, name):
    if kind == "miniserve":
        return ["--url", f"{url}/upload?path=/", "--form", f"path=@{path};filename={name}"]
    return ["--url", f"{url}/", "--form", f"file=@{path};filename={name}"]


def put_args(kind, url, path, name):
    target = f"{url}/{name}" if kind == "dufs" else f"{url}/files/{name}"
    return ["--url", target, "--upload-file", path]


def upload_args(kind, method, url, path, name):
    return (form_args if method == "form" else put_args)(kind, url, path, name)


def curl(args, out, iface="127.0.0.1"):
    return ["curl", "-sS", "--interface", iface, "-o", out, "-w", "%{http_code}\n"] + args


def config_line(flag, value):
    return f'{flag.lstrip("-")} = "{value}"\n'


# ---- checking --------------------------------------------------------------


def sha256_file(path, start=0, end=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        left = (end if end is not None else os.path.getsize(path)) - start
        while left > 0:
            b = f.read(min(left, 4 * MIB))
            if not b:
                break
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def sink_form_sha(path):
    """sha256 of the file part of a raw multipart body stored by the sink."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8192)
        f.seek(max(0, size - 512))
        tail = f.read()
    boundary = head.split(b"\r\n", 1)[0]
    start = head.index(b"\r\n\r\n") + 4
    end = max(0, size - 512) + tail.rindex(b"\r\n" + boundary)
    return sha256_file(path, start, end)


class Check:
    def __init__(self):
        self.failures = []

    def fail(self, what):
        self.failures.append(what)
        log("  CHECK FAILED:", what)


def verify(check, kind, method, server, code, body, src, src_sha, name):
    """Status, tinydrop's answered sha256 (in `body`, the answer's bytes),
    the stored file's sha256."""
    code = code.strip()
    # miniserve answers a successful upload with a redirect to the listing.
    ok = ("200", "201", "303") if kind == "miniserve" else ("200", "201")
    if code not in ok:
        return check.fail(f"{kind} {name}: HTTP {code} {body[:200]!r}")
    if kind == "tinydrop":
        files = json.loads(body)["files"]
        got = files[0]
        if got.get("status") != "saved" or got.get("sha256") != src_sha:
            return check.fail(f"tinydrop {name}: answered {got}")
        stored = os.path.join(server.updir, got["saved_as"])
    elif kind == "sink":
        stored = os.path.join(server.updir, json.loads(body)["saved_as"])
    else:
        stored = os.path.join(server.updir, name)
    if not os.path.isfile(stored):
        return check.fail(f"{kind} {name}: nothing stored at {stored}")
    if kind == "sink" and method == "form":
        sha = sink_form_sha(stored)
    else:
        sha = sha256_file(stored)
    if sha != src_sha:
        check.fail(f"{kind} {name}: stored sha256 {sha} != source {src_sha}")


# ---- scenarios ---------------------------------------------------------------


def run_single(kind, method, server, data, tag, tmp, check):
    """S1/S2: one big file. Returns (seconds, bytes)."""
    src = data["big"]
    resp = os.path.join(tmp, f"resp-{kind}-{tag}.json")
    name = f"{tag}.bin"
    cmd = curl(upload_args(kind, method, server.url, src, name), resp)
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    secs = time.monotonic() - t0
    if out.returncode != 0:
        check.fail(f"{kind} {tag}: curl exited {out.returncode}: {out.stderr.strip()}")
    else:
        body = open(resp, "rb").read() if os.path.exists(resp) else b""
        verify(check, kind, method, server, out.stdout, body, src, data["sha"][src], name)
    return secs, os.path.getsize(src)


def run_many(kind, method, server, files, clients, tmp, data, check, tag):
    """S3/S4: `files` split over `clients` curl processes started at once,
    each uploading its share over one kept-alive connection. Answers come
    back on curl's stdout, each followed by a marked status line: writing a
    file per answer would put 1000 file creations of the client on the same
    disk and CPUs as the server being measured."""
    cfgdir = os.path.join(tmp, f"cfg-{kind}-{tag}")
    os.makedirs(cfgdir, exist_ok=True)
    procs, shares, configs = [], [], []
    clients = min(clients, len(files))
    for c in range(clients):
        share = files[c::clients]
        cfg = os.path.join(cfgdir, f"client{c}.cfg")
        names = []
        with open(cfg, "w") as f:
            for i, src in enumerate(share):
                if i:
                    f.write("next\n")
                name = f"{tag}-c{c}-{i:04d}.bin"
                args = upload_args(kind, method, server.url, src, name)
                for flag, value in zip(args[::2], args[1::2]):
                    f.write(config_line(flag, value))
                f.write(config_line("--interface", f"127.0.0.{c % 8 + 1}"))
                f.write('write-out = "\\n@@%{http_code}@@\\n"\nsilent\nshow-error\n')
                names.append((src, name))
        configs.append(cfg)
        shares.append(names)
    t0 = time.monotonic()
    for cfg in configs:
        procs.append(subprocess.Popen(["curl", "-K", cfg], stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate() for p in procs]
    secs = time.monotonic() - t0
    for c, (p, (out, err)) in enumerate(zip(procs, outs)):
        if p.returncode != 0:
            check.fail(f"{kind} {tag} client {c}: curl exited {p.returncode}: {err.decode(errors='replace').strip()[:300]}")
        # body, code, body, code, ..., "" (after the last marker)
        parts = re.split(rb"\n@@(\d{3})@@\n", out)
        answers = list(zip(parts[0::2], parts[1::2]))
        for i, (src, name) in enumerate(shares[c]):
            body, code = answers[i] if i < len(answers) else (b"", b"none")
            verify(check, kind, method, server, code.decode(), body, src, data["sha"][src], name)
    shutil.rmtree(cfgdir, ignore_errors=True)
    return secs, sum(os.path.getsize(f) for f in files)


def clean(updir):
    shutil.rmtree(updir, ignore_errors=True)
    os.sync()


def one(label, kind, scenario, binary, data, tmp, check, results):
    """One fresh server, one scenario; appends figures to results[label]."""
    # S3 uploads go to a folder of their own that stays until the end: on
    # ext4 without a journal, inodes freed in the last 30 s are skipped by
    # the inode allocator one by one, so 1000 files deleted just before a
    # run made the next server's file creations scan past them (perf:
    # recently_deleted), whichever server came next.
    keep = scenario == "S3"
    runs = len(results.get(label, {}).get("S3", []))
    updir = os.path.join(tmp, f"up-{label}-s3-{runs}" if keep else f"up-{label}")
    clean(updir)
    server = Server(label, kind, binary, updir, tmp)
    try:
        time.sleep(0.3)
        r = results.setdefault(label, {})
        r.setdefault("idle_rss", []).append(server.status_kib("VmRSS") / 1024)
        r.setdefault("idle_anon", []).append(server.status_kib("RssAnon") / 1024)
        cpu0 = server.cpu()
        if scenario in ("S1", "S2"):
            method = "form" if scenario == "S1" else "put"
            if (method == "form" and kind not in FORM) or (method == "put" and kind not in PUT):
                return
            secs, nbytes = run_single(kind, method, server, data, scenario.lower(), tmp, check)
            r.setdefault(scenario, []).append(nbytes / MIB / secs)
        elif scenario == "S3":
            method = "form" if kind in FORM else "put"
            secs, nbytes = run_many(kind, method, server, data["small"], 8, tmp, data, check, "s3")
            r.setdefault("S3", []).append(len(data["small"]) / secs)
        else:
            method = "put" if kind in PUT else "form"
            secs, nbytes = run_many(kind, method, server, data["mid"], 32, tmp, data, check, "s4")
            r.setdefault("S4", []).append(nbytes / MIB / secs)
            r.setdefault("S4_rss", []).append(server.status_kib("VmHWM") / 1024)
        cpu = server.cpu() - cpu0
        if scenario != "S3":
            r.setdefault("cpu_s", []).append(cpu)
            r.setdefault("cpu_bytes", []).append(nbytes)
        log(f"  {label:9} {scenario}: {secs:6.2f} s, server cpu {cpu:5.2f} s")
    finally:
        server.stop()
        if not keep:
            clean(updir)


# ---- data --------------------------------------------------------------------


def make_data(tmp, big_size, mid_count, mid_size, small_count, small_size):
    d = os.path.join(tmp, "data")
    os.makedirs(d)
    big = os.path.join(d, "big.bin")
    subprocess.run(["head", "-c", str(big_size), "/dev/urandom"], stdout=open(big, "wb"), check=True)
    mid = []
    for i in range(mid_count):
        p = os.path.join(d, f"mid-{i:02d}.bin")
        subprocess.run(["head", "-c", str(mid_size), "/dev/urandom"], stdout=open(p, "wb"), check=True)
        mid.append(p)
    small = []
    for i in range(small_count):
        p = os.path.join(d, f"small-{i:04d}.bin")
        with open(p, "wb") as f:
            f.write(os.urandom(small_size))
        small.append(p)
    os.sync()  # no writeback of the test data during the measurements
    sha = {}
    everything = [big] + mid + small
    for i in range(0, len(everything), 200):
        out = subprocess.run(["sha256sum"] + everything[i : i + 200], capture_output=True, text=True, check=True)
        for line in out.stdout.splitlines():
            digest, path = line.split(None, 1)
            sha[path.lstrip("*")] = digest
    return {"big": big, "mid": mid, "small": small, "sha": sha}


# ---- table -------------------------------------------------------------------


def med(values):
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def table(results, sizes, kinds, rounds, check):
    t, s = results.get("tinydrop", {}), results.get("sink", {})

    def cpu_per_gib(r):
        if not r.get("cpu_s"):
            return None
        # All S1, S2 and S4 runs: their CPU over their bytes.
        return sum(r["cpu_s"]) / (sum(r["cpu_bytes"]) / GIB)

    rows = [
        ("S1 1 GiB curl -F, MiB/s", "S1", True, ("rel", 0.9)),
        ("S2 1 GiB curl -T, MiB/s", "S2", True, ("rel", 0.9)),
        ("S3 1000 x 4 KiB, files/s", "S3", True, ("min", 2000)),
        ("S4 32 x 32 MiB, MiB/s", "S4", True, None),
        ("S4 peak RSS, MiB", "S4_rss", False, ("max", 8)),
        ("idle RSS, MiB", "idle_rss", False, ("max", 2)),
        ("  of which private (RssAnon)", "idle_anon", False, None),
        ("CPU s per GiB", "cpu", False, ("max", 1.2)),
        ("binary size, MiB", "size", False, ("max", 1.0)),
    ]
    head = ["figure", "tinydrop", "baseline", "ratio", "target", "result"]
    peers = [k for k in kinds if k not in ("tinydrop", "sink")]
    head += peers
    lines = []
    for label, key, higher, target in rows:
        def val(kind):
            r = results.get(kind, {})
            if key == "cpu":
                return cpu_per_gib(r)
            if key == "size":
                return sizes.get(kind)
            return med(r.get(key, []))

        tv, sv = val("tinydrop"), val("sink")
        ratio = tv / sv if tv is not None and sv else None
        if target is None:
            tgt, ok = "-", None
        elif target[0] == "rel":
            tgt, ok = f">= {target[1]} x baseline", ratio is not None and ratio >= target[1]
        elif target[0] == "min":
            tgt, ok = f">= {target[1]:,}", tv is not None and tv >= target[1]
        else:
            tgt, ok = f"<= {target[1]}", tv is not None and tv <= target[1]
        digits = 2 if key in ("cpu", "size", "S4_rss", "idle_rss", "idle_anon") else 0
        row = [label, fmt(tv, digits), fmt(sv, digits), fmt(ratio, 2) + ("" if ratio is None else "x"), tgt,
               "-" if ok is None else ("pass" if ok else "FAIL")]
        row += [fmt(val(k), digits) for k in peers]
        lines.append(row)
    widths = [max(len(str(r[i])) for r in lines + [head]) for i in range(len(head))]
    out = []
    sep = "-+-".join("-" * w for w in widths)
    out.append(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    out.append(sep)
    for r in lines:
        out.append(" | ".join((c.ljust(w) if i == 0 else c.rjust(w)) for i, (c, w) in enumerate(zip(r, widths))))
    print("\n".join(out))
    print(
        f"median of {rounds} interleaved rounds; baseline = bench/sink (raw body, 1 MiB reads, "
        f"sync_data + folder fsync, no parsing, no hash); checks: "
        + ("all sha256 ok" if not check.failures else f"{len(check.failures)} FAILED")
    )
    return all(r[5] != "FAIL" for r in lines)


# ---- main --------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--tinydrop", default=os.path.join(target, "release", "tinydrop"))
    ap.add_argument("--sink", default=os.path.join(target, "release", "tinydrop-sink"))
    ap.add_argument("--peers", action="store_true", help="add miniserve and dufs (target/peers/bin)")
    ap.add_argument("--peers-dir", default="target/peers/bin")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                    help="another tinydrop binary as an extra column (A/B in the same run)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1G", help="size of the S1/S2 file (default 1G)")
    ap.add_argument("--scenarios", default="S1,S2,S3,S4")
    ap.add_argument("--tmp", default=None, help="where the temp dir goes (default: the system's)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny data (8 MiB, 8 x 1 MiB, 64 x 4 KiB), one round: checks the bench "
                         "and every upload's hashes, not speed (make test runs it)")
    a = ap.parse_args()

    binaries = {"tinydrop": a.tinydrop, "sink": a.sink}
    if a.peers:
        for p in ("miniserve", "dufs"):
            binaries[p] = os.path.join(a.peers_dir, p)
    types = {k: k for k in binaries}
    for v in a.variant:
        name, path = v.split("=", 1)
        binaries[name], types[name] = path, "tinydrop"
    for k, b in binaries.items():
        if not os.access(b, os.X_OK):
            raise SystemExit(f"{k}: no binary at {b} (make bench builds it)")
    kinds = list(binaries)
    scenarios = a.scenarios.split(",")

    tmp = tempfile.mkdtemp(prefix="tinydrop-bench-", dir=a.tmp)
    check = Check()
    results = {}
    try:
        log(f"generating test data in {tmp} ...")
        if a.smoke:
            a.rounds = 1
            data = make_data(tmp, 8 * MIB, 8, MIB, 64, 4096)
        else:
            data = make_data(tmp, parse_size(a.size), 32, 32 * MIB, 1000, 4096)
        for rnd in range(a.rounds):
            log(f"round {rnd + 1}/{a.rounds}")
            for si, scenario in enumerate(scenarios):
                shift = (rnd + si) % len(kinds)
                for kind in kinds[shift:] + kinds[:shift]:
                    one(kind, types[kind], scenario, binaries[kind], data, tmp, check, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sizes = {k: os.path.getsize(b) / MIB for k, b in binaries.items()}
    ok = table(results, sizes, kinds, a.rounds, check)
    if check.failures:
        sys.exit(2)
    if a.strict and not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
