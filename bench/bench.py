#!/usr/bin/env python3
"""Side-by-side submission benchmark: Postfix + Dovecot (optionally with OpenDKIM) against
`posthorn serve` (without and with DKIM), same certificate, users and counting sink,
loaded by bench/loadgen. Called by bench/run.sh, which installs the peers and builds.

For each cell C x M and each run, the servers take turns (the order rotates per run).
Per run: msgs/s and latency from the load generator; server CPU from /proc (see
ServerTree); peak PSS sampled from /proc/PID/smaps_rollup; the sink's message count,
which must grow by exactly the accepted count once the queue has drained. Prints a
markdown table of medians with Posthorn/Postfix ratios; raw runs go to DIR/runs.json.
Exits 1 if any run lost mail or saw errors (the smoke test relies on that).
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER, PASSWORD = "bench@example.test", "bench-password"
RCPT = "sink@sink.test"
TICK = os.sysconf("SC_CLK_TCK")
# Each side and the side it is compared with. posthorn-base is a second posthorn binary
# (--posthorn-base: a lever measured before/after in one alternating run); the Ed25519
# side signs with RSA and Ed25519 (RFC 8463 asks for both), so against posthorn-dkim it
# shows what the second signature costs.
PAIRS = [("postfix", "posthorn"), ("postfix-dkim", "posthorn-dkim"),
         ("posthorn-base", "posthorn"), ("posthorn-dkim", "posthorn-dkim-ed25519")]


def run(*cmd, **kw):
    done = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"bench: {what} on port {port} did not come up")


class ServerTree:
    """The processes of one server: its root pids and all their descendants.

    CPU is summed over the live processes of the tree as utime + stime + cutime +
    cstime. A child that exits and is reaped by its parent (Postfix's master reaps every
    short-lived smtpd, cleanup and smtp; Dovecot's master its auth workers) moves its
    CPU, including that of its own reaped children, into the parent's cutime/cstime, so
    the sum over the live tree counts every process that ever ran under the roots, and
    a difference taken before and after a run is that run's CPU, whichever processes
    came and went in between."""

    def __init__(self, name, roots):
        self.name, self.roots = name, roots

    def pids(self):
        parent = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        # The command name may hold spaces: fields follow its ')'.
                        fields = f.read().rsplit(")", 1)[1].split()
                    parent[int(entry)] = int(fields[1])
                except (OSError, IndexError):
                    pass
        tree = {p for p in self.roots if p in parent}
        grew = True
        while grew:
            grew = False
            for pid, ppid in parent.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        return tree

    def cpu_seconds(self):
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                # utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after ')'.
                total += sum(int(x) for x in fields[11:15])
            except OSError:
                pass
        return total / TICK

    def pss_bytes(self):
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except OSError:
                pass
        return total


class Sink:
    """smtp-sink -c: its running counters end in `mesg=N`, one per message received."""

    def __init__(self, workdir, name):
        self.port = free_port()
        self.out = os.path.join(workdir, f"sink-{name}.out")
        self.proc = subprocess.Popen(
            ["smtp-sink", "-c", "-u", "postfix", f"127.0.0.1:{self.port}", "256"],
            stdout=open(self.out, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_port(self.port, "smtp-sink")

    def count(self):
        with open(self.out, "rb") as f:
            f.seek(max(0, os.path.getsize(self.out) - 200))
            counts = re.findall(rb"mesg=(\d+)", f.read())
        return int(counts[-1]) if counts else 0


def start_postfix(workdir, name, files, dkim):
    d = os.path.join(workdir, name)
    os.makedirs(d)
    for f in ("tls.crt", "tls.key"):
        shutil.copy(os.path.join(workdir, f), d)
    sink = Sink(workdir, name)
    port = free_port()
    args = [port, sink.port, files["users"], files["senders"]]
    if dkim:
        args.append(files["dkim"])
    run("bash", os.path.join(REPO, "bench/postfix.sh"), "start", d, *map(str, args))
    pidfiles = [f"{d}/queue/pid/master.pid", f"{d}/dovecot-run/master.pid"]
    if dkim:
        pidfiles.append(f"{d}/opendkim.pid")
    roots = [int(open(p).read().split()[0]) for p in pidfiles]
    stop = lambda: run("bash", os.path.join(REPO, "bench/postfix.sh"), "stop", d)
    return port, sink, ServerTree(name, roots), stop


def start_posthorn(workdir, name, files, dkim, binary, dns_port, ecdsa=False):
    d = os.path.join(workdir, name)
    os.makedirs(d)
    sink = Sink(workdir, name)
    port = free_port()
    ecdsa_pair = f", ecdsa: {{cert: {workdir}/ec.crt, key: {workdir}/ec.key}}" if ecdsa else ""
    config = f"""hostname: posthorn.bench.test
domains: [example.test]
listeners: {{smtp: null, submission: "127.0.0.1:{port}", submissions: null}}
metrics: "127.0.0.1:{free_port()}"
tls: {{cert: {workdir}/tls.crt, key: {workdir}/tls.key{ecdsa_pair}}}
auth: {{passwdFile: {files["users"]}}}
senderLoginMap: {files["senders"]}
dns: {{nameservers: ["127.0.0.1:{dns_port}"]}}
spool: {{directory: {d}/spool, maildirRoot: {d}/mail}}
# Postfix's default_process_limit is 100 and it exempts loopback from its per-client
# limit: C up to 100 from one address must fit.
limits: {{maxConnectionsPerIp: 100}}
delivery: {{mxPort: {sink.port}}}
"""
    if dkim:
        ed25519 = f", ed25519: {{keyFile: {files['dkim-ed25519']}}}" if "-ed25519" in name else ""
        config += f"dkim: {{selector: bench, keyFile: {files['dkim']}{ed25519}}}\n"
    with open(f"{d}/config.yaml", "w") as f:
        f.write(config)
    proc = subprocess.Popen([binary, "serve", "--config", f"{d}/config.yaml"],
                            stdout=subprocess.PIPE, stderr=open(f"{d}/server.log", "w"),
                            stdin=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening"):
        sys.exit(f"bench: {name} did not start; see {d}/server.log")
    return port, sink, ServerTree(name, [proc.pid]), lambda: (proc.terminate(), proc.wait())


def make_files(workdir):
    """RSA-2048 certificate and DKIM key, one {SHA512-CRYPT} user, its sender map line."""
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
        "-keyout", f"{workdir}/tls.key", "-out", f"{workdir}/tls.crt")
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "30", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost",
        "-keyout", f"{workdir}/ec.key", "-out", f"{workdir}/ec.crt")
    # The load generator pins both certificates (the -ecdsa sides serve the second).
    with open(f"{workdir}/pinned.crt", "w") as f:
        f.write(open(f"{workdir}/tls.crt").read() + open(f"{workdir}/ec.crt").read())
    run("openssl", "genrsa", "-out", f"{workdir}/dkim.key", "2048")
    run("openssl", "genpkey", "-algorithm", "ed25519", "-out", f"{workdir}/dkim-ed25519.key")
    scheme_hash = run("doveadm", "pw", "-s", "SHA512-CRYPT", "-p", PASSWORD).strip()
    with open(f"{workdir}/users", "w") as f:
        f.write(f"{USER}:{scheme_hash}\n")
    with open(f"{workdir}/senders", "w") as f:
        f.write(f"{USER} {USER}\n")
    return {"users": f"{workdir}/users", "senders": f"{workdir}/senders",
            "dkim": f"{workdir}/dkim.key", "dkim-ed25519": f"{workdir}/dkim-ed25519.key"}


def start_dns(workdir):
    """dnsmasq for Posthorn's recipient domain check and MX lookup: sink.test -> 127.0.0.1."""
    port = free_port()
    proc = subprocess.Popen(
        ["dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts",
         "--bind-interfaces", "--listen-address=127.0.0.1", "--local=/test/",
         f"--port={port}", "--mx-host=sink.test,mx.sink.test,10",
         "--host-record=mx.sink.test,127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=open(f"{workdir}/dnsmasq.log", "w"))
    wait_port(port, "dnsmasq")
    return port, proc


def one_run(args, server, clients, messages):
    port, sink, tree, _ = server
    before_sink, before_cpu = sink.count(), tree.cpu_seconds()
    peak, sampling = [tree.pss_bytes()], threading.Event()

    def sample():
        while not sampling.wait(0.25):
            peak.append(tree.pss_bytes())

    sampler = threading.Thread(target=sample)
    sampler.start()
    # A profiler attached to the server for the run and the drain (--attach): stopped
    # with SIGINT, on which perf writes its data.
    attached = None
    if args.attach:
        out = f"{args.dir}/{tree.name}.c{clients}.m{messages}.{time.time_ns()}"
        cmd = args.attach.format(pids=",".join(map(str, sorted(tree.pids()))), out=out)
        attached = subprocess.Popen(cmd, shell=True, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)  # perf needs a moment before it records
    limit = ["--total", str(args.total)] if args.total else ["--duration", f"{args.duration}s"]
    # The load generator is the only child waited for meanwhile: its own CPU.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    resume = args.resume or tree.name.endswith("-resume")
    out = run(args.loadgen, "--addr", f"127.0.0.1:{port}", "--cert", f"{args.dir}/pinned.crt",
              "--user", USER, "--password", PASSWORD, "--rcpt", RCPT,
              "-c", str(clients), "-m", str(messages), *limit, "--json",
              *(["--resume"] if resume else []))
    report = json.loads(out)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    loadgen_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    # Delivery to the sink is part of the server's work: wait for the queue to drain.
    deadline = time.monotonic() + args.drain_timeout
    while sink.count() - before_sink < report["accepted"] and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # anything beyond the accepted count would show up now
    sampling.set()
    sampler.join()
    if attached:
        os.killpg(attached.pid, signal.SIGINT)
        attached.wait()
    delivered = sink.count() - before_sink
    cpu = tree.cpu_seconds() - before_cpu
    report.update(server=tree.name, delivered=delivered, cpu_s=cpu, peak_pss=max(peak),
                  loadgen_cpu_s=loadgen_cpu,
                  cpu_ms_per_msg=1e3 * cpu / report["accepted"] if report["accepted"] else 0)
    return report


def fmt(v, digits=0):
    return f"{v:,.{digits}f}"


def table(runs, servers, cells):
    """Markdown: per cell, the medians of each side and Posthorn/Postfix ratios."""
    lines = []
    for base, ours in PAIRS:
        if base not in servers or ours not in servers:
            continue
        lines += [f"\n### {base} vs {ours} (median of runs)\n",
                  "| C | M | msgs/s | × | p50 ms | p99 ms | CPU ms/msg | CPU % | peak PSS MB | errors | TLS resumed % | sink = accepted |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c, m in cells:
            med = {}
            for s in (base, ours):
                rs = [r for r in runs if r["server"] == s and r["clients"] == c
                      and r["messages_per_connection"] == m]
                med[s] = {k: statistics.median(r[k] for r in rs) if k != "errors" else
                          sum(r["error_count"] for r in rs)
                          for k in ("msgs_per_s", "cpu_ms_per_msg", "peak_pss", "errors")}
                med[s]["p50"] = statistics.median(r["message_ms"]["p50"] for r in rs)
                med[s]["p99"] = statistics.median(r["message_ms"]["p99"] for r in rs)
                med[s]["ok"] = all(r["delivered"] == r["accepted"] for r in rs)
                tls = sum(r["full_handshakes"] + r["resumed_handshakes"] for r in rs)
                med[s]["resumed"] = (100 * sum(r["resumed_handshakes"] for r in rs) / tls
                                     if tls else 0)
            b, o = med[base], med[ours]
            both = lambda k, d=0: f"{fmt(b[k], d)} / {fmt(o[k], d)}"
            ratio = o["msgs_per_s"] / b["msgs_per_s"] if b["msgs_per_s"] else 0
            cpu_pct = 100 * o["cpu_ms_per_msg"] / b["cpu_ms_per_msg"] if b["cpu_ms_per_msg"] else 0
            lines.append(
                f"| {c} | {m} | {both('msgs_per_s')} | {ratio:.1f}× | {both('p50', 1)} | "
                f"{both('p99', 1)} | {both('cpu_ms_per_msg', 2)} | {cpu_pct:.0f} % | "
                f"{b['peak_pss'] / 1e6:.0f} / {o['peak_pss'] / 1e6:.0f} | "
                f"{b['errors']} / {o['errors']} | {both('resumed')} | "
                f"{'yes' if b['ok'] and o['ok'] else 'NO'} |")
    lines.append("\nEach pair of numbers is first side / second side; × and % are the second "
                 "side's msgs/s and CPU per message relative to the first's.")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", default="1,10,50,100", help="C values, comma-separated")
    p.add_argument("--messages", default="1,10", help="M values, comma-separated")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=10, help="seconds per run")
    p.add_argument("--total", type=int, help="messages per run instead of a duration")
    # Posthorn variants for A/B runs: posthorn-ecdsa (an ECDSA pair next to the RSA one),
    # posthorn-resume (clients resume TLS sessions), combinable with -dkim;
    # posthorn-dkim-ed25519 (RSA and Ed25519 signatures); posthorn-base (--posthorn-base).
    p.add_argument("--servers", default="postfix,posthorn,postfix-dkim,posthorn-dkim")
    # Not under /tmp: OpenDKIM refuses files below a world-writable directory.
    p.add_argument("--dir", default=f"{REPO}/target/bench", help="work directory (recreated)")
    p.add_argument("--posthorn", default=f"{REPO}/target/release/posthorn")
    p.add_argument("--posthorn-base", metavar="PATH",
                   help="a second posthorn binary (e.g. before a change): adds the side "
                        "posthorn-base, compared with posthorn in the same alternating runs")
    p.add_argument("--loadgen", default=f"{REPO}/target/release/loadgen")
    p.add_argument("--resume", action="store_true", help="clients resume TLS sessions")
    p.add_argument("--drain-timeout", type=float, default=120)
    p.add_argument("--attach", metavar="CMD",
                   help="shell command run for each run's duration and drain, stopped with "
                        "SIGINT; {pids} is the server's processes, {out} a per-run file "
                        "prefix, e.g. 'perf sched record -o {out}.sched -p {pids}'")
    args = p.parse_args()
    cells = [(int(c), int(m)) for c in args.clients.split(",") for m in args.messages.split(",")]
    servers = args.servers.split(",")
    if args.posthorn_base and "posthorn-base" not in servers:
        servers.append("posthorn-base")
    if any(s.startswith("posthorn-base") for s in servers) and not args.posthorn_base:
        sys.exit("bench: the posthorn-base side needs --posthorn-base PATH")

    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    os.chmod(args.dir, 0o755)
    files = make_files(args.dir)
    dns_port, dns = start_dns(args.dir)
    started = {}
    try:
        for s in servers:
            dkim = "-dkim" in s
            if s.startswith("postfix"):
                started[s] = start_postfix(args.dir, s, files, dkim)
            else:
                binary = args.posthorn_base if s.startswith("posthorn-base") else args.posthorn
                started[s] = start_posthorn(args.dir, s, files, dkim, binary, dns_port,
                                            ecdsa="-ecdsa" in s)
        runs = []
        for c, m in cells:
            for i in range(args.runs):
                # Alternate: each run starts with the next server, so drift in the
                # machine's load spreads over all sides.
                order = servers[i % len(servers):] + servers[:i % len(servers)]
                for s in order:
                    r = one_run(args, started[s], c, m)
                    runs.append(r)
                    print(f"{s:14} C={c:<3} M={m:<2} {r['msgs_per_s']:8.1f} msgs/s "
                          f"p99 {r['message_ms']['p99']:7.1f} ms "
                          f"cpu {r['cpu_ms_per_msg']:5.2f} ms/msg "
                          f"pss {r['peak_pss'] / 1e6:5.0f} MB "
                          f"loadgen cpu {r['loadgen_cpu_s']:5.1f} s errors {r['error_count']} "
                          f"TLS full/resumed {r['full_handshakes']}/{r['resumed_handshakes']} "
                          f"accepted {r['accepted']} delivered {r['delivered']}",
                          file=sys.stderr, flush=True)
                    for e, n in r["errors"].items():
                        print(f"    {n} x {e}", file=sys.stderr)
    finally:
        for s in started.values():
            s[3]()
        for s in started.values():
            s[1].proc.terminate()
        dns.terminate()
    with open(f"{args.dir}/runs.json", "w") as f:
        json.dump(runs, f, indent=1)
    print(table(runs, servers, cells))
    # A resuming side whose clients never resumed measures nothing it claims to.
    bad = [r for r in runs if r["error_count"] or r["delivered"] != r["accepted"]
           or not r["accepted"]
           or (r["server"].endswith("-resume") and r["connections"] > r["clients"]
               and not r["resumed_handshakes"])]
    for r in bad:
        print(f"bench: {r['server']} C={r['clients']} M={r['messages_per_connection']}: "
              f"{r['error_count']} errors, accepted {r['accepted']}, delivered "
              f"{r['delivered']}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
