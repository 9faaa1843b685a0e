#!/usr/bin/env python3
"""Memory of idle TLS sessions: `posthorn serve` with the bench's RSA-2048 certificate and
{SHA512-CRYPT} user; the load generator (--hold) opens N sessions, each a full STARTTLS
handshake, EHLO and AUTH PLAIN, and leaves them idle. Prints the server's RSS and PSS
(/proc/PID/smaps_rollup) before and with the N sessions, and per session.

    python3 bench/idle.py [--sessions 1000,10000] [--posthorn PATH] [--loadgen PATH]

Needs root or a high enough hard RLIMIT_NOFILE (each session is a descriptor on both
sides); the limits of the server's config are raised to N (maxConnections to 2N, so
the stress timeouts never start). Sessions come from 127.0.0.1-127.0.0.8 so that no
source address runs short of ephemeral ports.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (make_files, start_dns, free_port, Sink)


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                fields[key] = int(rest.split()[0]) * 1024
    return fields["Rss"], fields["Pss"]


def one(args, files, dns_port, n):
    d = os.path.join(args.dir, f"idle-{n}")
    os.makedirs(d)
    sink = bench.Sink(args.dir, f"idle-{n}")
    port = bench.free_port()
    config = f"""hostname: posthorn.bench.test
domains: [example.test]
listeners: {{smtp: null, submission: "127.0.0.1:{port}", submissions: null}}
metrics: "127.0.0.1:{bench.free_port()}"
tls: {{cert: {args.dir}/tls.crt, key: {args.dir}/tls.key}}
auth: {{passwdFile: {files["users"]}}}
senderLoginMap: {files["senders"]}
dns: {{nameservers: ["127.0.0.1:{dns_port}"]}}
spool: {{directory: {d}/spool, maildirRoot: {d}/mail}}
limits: {{maxConnections: {2 * n}, maxConnectionsPerIp: {n}, maxConnectionsPerNetwork: {n},
          idleTimeout: 3600s, stressIdleTimeout: 3600s}}
delivery: {{mxPort: {sink.port}}}
"""
    with open(f"{d}/config.yaml", "w") as f:
        f.write(config)
    server = subprocess.Popen([args.posthorn, "serve", "--config", f"{d}/config.yaml"],
                              stdout=subprocess.PIPE, stderr=open(f"{d}/server.log", "w"),
                              stdin=subprocess.DEVNULL, text=True)
    try:
        if not server.stdout.readline().startswith("listening"):
            sys.exit(f"idle: posthorn did not start; see {d}/server.log")
        time.sleep(1)
        before = memory(server.pid)
        holder = subprocess.Popen(
            [args.loadgen, "--addr", f"127.0.0.1:{port}", "--cert", f"{args.dir}/pinned.crt",
             "--user", bench.USER, "--password", bench.PASSWORD, "--rcpt", bench.RCPT,
             "-c", str(n), "--hold", "--sources", "8", "--reply-timeout", "600"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        report = json.loads(holder.stdout.readline())
        time.sleep(2)  # let the server settle (freed handshake buffers, allocator)
        held = memory(server.pid)
        holder.stdin.close()
        holder.wait()
    finally:
        server.terminate()
        server.wait()
        sink.proc.terminate()
    return {"sessions": n, "held": report["held"], "errors": report["errors"],
            "rss_before": before[0], "pss_before": before[1],
            "rss": held[0], "pss": held[1]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", default="1000,10000", help="N values, comma-separated")
    p.add_argument("--dir", default=f"{bench.REPO}/target/bench-idle")
    p.add_argument("--posthorn", default=f"{bench.REPO}/target/release/posthorn")
    p.add_argument("--loadgen", default=f"{bench.REPO}/target/release/loadgen")
    args = p.parse_args()
    sessions = [int(n) for n in args.sessions.split(",")]
    # Both processes inherit this limit, which is per process: N descriptors each, plus
    # their own.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(sessions) + 1024
    if hard != resource.RLIM_INFINITY and hard < want:
        hard = want  # raising the hard limit needs root
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        sys.exit(f"idle: cannot raise RLIMIT_NOFILE to {want}; run as root")
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    files = bench.make_files(args.dir)
    dns_port, dns = bench.start_dns(args.dir)
    results = []
    try:
        for n in sessions:
            results.append(one(args, files, dns_port, n))
    finally:
        dns.terminate()
    with open(f"{args.dir}/idle.json", "w") as f:
        json.dump(results, f, indent=1)
    print("| idle TLS sessions | held | RSS MiB | PSS MiB | RSS before | KiB RSS per session | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        per = (r["rss"] - r["rss_before"]) / 1024 / r["held"] if r["held"] else 0
        print(f"| {r['sessions']:,} | {r['held']:,} | {r['rss'] / 2**20:.1f} | "
              f"{r['pss'] / 2**20:.1f} | {r['rss_before'] / 2**20:.1f} | {per:.1f} | "
              f"{sum(r['errors'].values())} |")
    sys.exit(1 if any(r["held"] != r["sessions"] for r in results) else 0)


if __name__ == "__main__":
    main()
