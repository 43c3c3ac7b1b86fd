#!/usr/bin/env python3
"""bench-upgrade --compare: ways to swap a running container's application, compared in one run on
this machine under client load. Run it through `scripts/bench-upgrade --compare [OPTIONS]` (as root).

Methods (each its own container with its own address on one bridge, all alive during the run):
  keep-listen  molt upgrade --network keep, annotation io.molt.listen=tcp:0.0.0.0:8080: molt holds
               the listening socket and hands it to the new application (socket activation)
  keep         molt upgrade --network keep, no annotation: the application opens its own socket
  move-listen  molt upgrade --network move with io.molt.listen (the socket cannot follow into the
               new network namespace: molt opens a new one there before the new app starts)
  move         molt upgrade --network move, no annotation
  runc         a hand-written swap with runc: the app runs in a network namespace prepared here (a
               veth on the same bridge); swap = `runc kill ID TERM`, wait for the init to exit
               (pidfd), `runc delete -f ID`, `runc run -d` of the next version joining the same
               namespace path, then wait until a TCP connect to the app succeeds (the same job as
               molt's --health tcp:8080). /data is a bind mount of one loop-mounted ext4 directory.

Order: for each round 1..N, for each load mode, for each method: one upgrade (A, B, C, D, E, A, ...).
During each upgrade a load generator in the "host" network namespace (the namespace holding the
bridge; never the container's) drives that method's address, from --lead s before the upgrade
command starts to --tail s after it ended, and records every request (new TCP connection,
"VERSION\\n", one line back): its start, latency and outcome. Kernel connect semantics, no short
connect timeout (--timeout, default 10 s): a dropped SYN costs TCP's 1 s retransmission.
  closed loop: --clients K clients, each sends its next request when the previous one ended;
  open loop:   --rate R requests/s on a fixed schedule, each on its own connection, concurrently.
Before each upgrade a record is APPENDed; after it the new version must answer and COUNT must be
every record so far (the volume was handed over), or the run stops with status 1.

Needs python3-matplotlib (Debian: apt-get install python3-matplotlib) for the plot; without it
the table is still written and the plot is skipped with a message.
"""
import argparse
import asyncio
import ctypes
import datetime
import errno
import json
import os
import select
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ["keep-listen", "keep", "move-listen", "move", "runc"]
MODES = ["closed", "open"]
ADDR = {"keep-listen": "10.89.0.11", "keep": "10.89.0.12", "move-listen": "10.89.0.13",
        "move": "10.89.0.14", "runc": "10.89.0.19"}
BRIDGE, GATEWAY, PORT = "moltbr0", "10.89.0.1", 8080
FAILS = ["refused", "reset", "closed", "timeout"]  # the rest: errno names (EHOSTUNREACH, ...)
CLONE_NEWNET = 0x40000000


def say(*a):
    print("bench-upgrade:", *a, file=sys.stderr, flush=True)


def die(msg, code=2):
    say(msg)
    sys.exit(code)


class Interrupted(Exception):
    pass


INTERRUPTED = threading.Event()


def on_signal(signum, _frame):
    """Only a flag: the upgrade under way finishes (a half-done `molt upgrade` is not left behind),
    then the run stops and cleans up."""
    if not INTERRUPTED.is_set():
        say(f"signal {signum}: finishing the upgrade under way, then cleaning up")
    INTERRUPTED.set()


def run(cmd, check=True, **kw):
    """Run a command to its end, in its own session (a Ctrl-C on the terminal reaches only this script)."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.run(cmd, start_new_session=True, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {(p.stderr or b'').decode(errors='replace')[:500]}")
    return p.returncode, p.stdout, p.stderr


def out(cmd):
    return run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)[1].decode()


libc = ctypes.CDLL(None, use_errno=True)


def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {path}: {os.strerror(e)}")
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------- load generator
class Load:
    """An asyncio loop on its own thread (created after setns: its sockets live in the test
    namespace). start() begins driving an address, stop() ends it and returns every record:
    (start s relative to the caller's t0, latency s, outcome, answer)."""

    def __init__(self, timeout):
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def one(self, addr):
        t = time.perf_counter()
        answer = ""
        try:
            async with asyncio.timeout(self.timeout):
                r, w = await asyncio.open_connection(addr, PORT)
                try:
                    w.write(b"VERSION\n")
                    line = await r.readline()
                finally:
                    w.close()
            if not line:
                outcome = "closed"
            elif line.startswith(b"version="):
                outcome, answer = "ok", line.split()[0][8:].decode()
            else:
                outcome = "bad"
        except TimeoutError:
            outcome = "timeout"
        except ConnectionRefusedError:
            outcome = "refused"
        except (ConnectionResetError, BrokenPipeError):
            outcome = "reset"
        except OSError as e:
            outcome = errno.errorcode.get(e.errno, "error") if e.errno else "error"
        return t, time.perf_counter() - t, outcome, answer

    async def drive(self, mode, addr, clients, rate, stop):
        recs, tasks = [], set()

        async def keep(coro):
            recs.append(await coro)

        if mode == "closed":
            async def client():
                while not stop.is_set():
                    recs.append(await self.one(addr))
            await asyncio.gather(*(client() for _ in range(clients)))
        else:
            nxt = time.perf_counter()
            while not stop.is_set():
                task = asyncio.ensure_future(keep(self.one(addr)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                nxt += 1 / rate
                await asyncio.sleep(max(0, nxt - time.perf_counter()))
            if tasks:
                await asyncio.gather(*tasks)
        return recs

    def start(self, mode, addr, clients, rate):
        stop = threading.Event()
        fut = asyncio.run_coroutine_threadsafe(self.drive(mode, addr, clients, rate, stop), self.loop)
        return stop, fut

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def ask(addr, line, timeout=2.0, tries=40):
    """One request with retries (set-up and checks, not measured)."""
    last = None
    for _ in range(tries):
        try:
            with socket.create_connection((addr, PORT), timeout=timeout) as c:
                c.sendall(line.encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = c.recv(200)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    return data.decode().strip()
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"{addr}:{PORT} does not answer {line!r} ({last})")


def wait_tcp(addr, limit=30.0):
    """Until a TCP connect to addr succeeds (a SYN to a missing address is retried every 5 ms,
    not left to TCP's 1 s retransmission)."""
    end = time.perf_counter() + limit
    while time.perf_counter() < end:
        try:
            socket.create_connection((addr, PORT), timeout=0.05).close()
            return
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"{addr}:{PORT} accepts no connection after {limit} s")


# ---------------------------------------------------------------------------------- the bench
class Bench:
    def __init__(self, a):
        self.a = a
        self.pid = os.getpid()
        self.tag = f"molt-bench-cmp-{self.pid}"
        self.work = tempfile.mkdtemp(prefix="molt-bench-cmp.", dir=os.environ.get("TMPDIR", "/tmp"))
        self.root = f"/run/{self.tag}"
        self.runc_root = f"/run/{self.tag}-runc"
        self.ns = self.tag                 # the "host": bridge, load generator, runtimes
        self.runc_ns = f"{self.tag}-runc"  # runc's application namespace
        self.veth = f"rc{self.pid}h"
        self.runc_id = f"{self.tag}-runc"
        self.runc_vol = f"{self.work}/runc-volume"
        self.orig_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.load = None
        self.version = {m: 0 for m in METHODS}
        self.records = {m: 0 for m in METHODS}
        self.results = []  # one dict per upgrade

    def _ours(self, pid):
        """A process of this run still alive: its command line names the work directory or its root is
        the rootfs (a --rootfs shared with other containers would count them too)."""
        try:
            return int(pid) != self.pid and (self.work.encode() in open(f"/proc/{pid}/cmdline", "rb").read()
                                             or os.readlink(f"/proc/{pid}/root").startswith(
                                                 (self.work, getattr(self, "rootfs", self.work))))
        except OSError:
            return False

    def cid(self, m):
        return f"cmp{self.pid}-{m}"

    def molt(self, *args, **kw):
        return run([self.a.molt, "--root", self.root, *args], **kw)

    def runc(self, *args, **kw):
        return run([self.a.runc, "--root", self.runc_root, *args], **kw)

    # ------------------------------------------------------------ set-up
    def bundle(self, m, k):
        """The bundle of version 1.0.k of method m (from the upgrade demo's 1.1.0 config)."""
        c = json.load(open(f"{REPO}/oci/examples/upgrade-demo/config-1.1.0.json"))
        version = f"1.0.{k}"
        c["root"]["path"] = self.rootfs
        c["process"]["env"] = [f"APP_VERSION={version}" if e.startswith("APP_VERSION=") else e
                               for e in c["process"]["env"]]
        ann = c["annotations"]
        ann["org.opencontainers.image.version"] = version
        ann["io.molt.upgrade.from"] = ">=1.0.0, <2.0.0"
        ann["io.molt.net.address"] = f"{ADDR[m]}/24"
        # The demo's config has io.molt.listen: only the -listen methods keep it.
        ann.pop("io.molt.listen", None)
        if m.endswith("-listen"):
            ann["io.molt.listen"] = f"tcp:0.0.0.0:{PORT}"
        for mnt in c["mounts"]:
            if mnt["source"] == "@VOLUME@":
                mnt["source"] = f"{self.work}/volume-{m}.img"
        if m == "runc":
            for mnt in c["mounts"]:
                if mnt["destination"] == "/data":
                    mnt.update(type="bind", source=self.runc_vol, options=["rbind", "rw", "nosuid", "nodev"])
            for ns in c["linux"]["namespaces"]:
                if ns["type"] == "network":
                    ns["path"] = f"/run/netns/{self.runc_ns}"
            c["linux"]["cgroupsPath"] = f"/{self.tag}-runc"
            c["annotations"] = {"org.opencontainers.image.version": version}
        d = f"{self.work}/{m}/app-{k}"
        os.makedirs(d, exist_ok=True)
        json.dump(c, open(f"{d}/config.json", "w"), indent=1)
        return d

    def setup(self):
        a = self.a
        if a.rootfs:
            self.rootfs = os.path.abspath(a.rootfs)
        else:
            self.rootfs = f"{self.work}/rootfs"
            say("building the rootfs (scripts/build-rootfs)")
            run([f"{REPO}/scripts/build-rootfs", self.rootfs], stdout=subprocess.DEVNULL)
        if not os.access(f"{self.rootfs}/bin/molt-testapp", os.X_OK):
            die(f"{self.rootfs} has no bin/molt-testapp (scripts/build-rootfs needs rustc)")
        for m in self.methods:
            img = f"{self.work}/volume-{m}.img"
            with open(img, "wb") as f:
                f.truncate(64 << 20)
            run(["mkfs.ext4", "-q", "-F", img])
        run(["ip", "netns", "add", self.ns])
        setns(f"/run/netns/{self.ns}")  # from here on: this process and its children in the test netns
        run(["ip", "link", "set", "lo", "up"])
        # Many short connections from one address: reuse TIME_WAIT ports (this namespace only).
        run(["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=10000 65000"])
        self.load = Load(a.timeout)
        self.logf = open(f"{self.work}/apps.log", "ab")
        for m in self.methods:
            if m == "runc":
                continue
            run([a.molt, "--root", self.root, "run", "--detach", "--bundle", self.bundle(m, 0), self.cid(m)],
                stdout=self.logf, stderr=self.logf)
        if run(["ip", "link", "show", BRIDGE], check=False, stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)[0] != 0:
            run(["ip", "link", "add", BRIDGE, "type", "bridge"])
            run(["ip", "link", "set", BRIDGE, "up"])
        run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE])
        if "runc" in self.methods:
            img = f"{self.work}/volume-runc.img"
            os.makedirs(self.runc_vol)
            run(["mount", "-o", "loop", img, self.runc_vol])
            run(["ip", "netns", "add", self.runc_ns])
            run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.runc_ns])
            run(["ip", "link", "set", self.veth, "master", BRIDGE, "up"])
            for c in (["link", "set", "lo", "up"], ["addr", "add", f"{ADDR['runc']}/24", "dev", "eth0"],
                      ["link", "set", "eth0", "up"], ["route", "add", "default", "via", GATEWAY]):
                run(["ip", "-n", self.runc_ns, *c])
            run([a.runc, "--root", self.runc_root, "run", "-d", "--bundle", self.bundle("runc", 0), self.runc_id],
                stdout=self.logf, stderr=self.logf)
        for m in self.methods:
            v = ask(ADDR[m], "VERSION")
            if not v.startswith("version=1.0.0 "):
                die(f"{m}: the application 1.0.0 answers {v!r}")

    # ------------------------------------------------------------ one upgrade
    def swap_runc(self, bundle):
        """The hand-written swap; returns its steps as molt's JSON has them."""
        steps = []

        def step(name, f):
            t = time.perf_counter()
            f()
            steps.append({"step": name, "millis": round((time.perf_counter() - t) * 1000, 1)})

        st = json.loads(out([self.a.runc, "--root", self.runc_root, "state", self.runc_id]))
        pidfd = os.pidfd_open(st["pid"])
        try:
            step("kill TERM", lambda: self.runc("kill", self.runc_id, "TERM"))
            step("wait stopped", lambda: select.select([pidfd], [], [], self.a.stop_timeout))
        finally:
            os.close(pidfd)
        step("delete -f", lambda: self.runc("delete", "-f", self.runc_id))
        step("run -d", lambda: run([self.a.runc, "--root", self.runc_root, "run", "-d", "--bundle", bundle,
                                    self.runc_id], stdout=self.logf, stderr=self.logf))
        step("wait tcp:8080", lambda: wait_tcp(ADDR["runc"]))
        return steps

    def upgrade(self, rnd, mode, m):
        a, addr = self.a, ADDR[m]
        self.records[m] += 1
        ask(addr, f"APPEND {mode}-{rnd}-{self.records[m]}")
        self.version[m] += 1
        k = self.version[m]
        bundle = self.bundle(m, k)
        stop, fut = self.load.start(mode, addr, a.clients, a.rate)
        time.sleep(a.lead)
        t0 = time.perf_counter()
        report, error = None, None
        try:
            if m == "runc":
                report = {"steps": self.swap_runc(bundle), "unavailable_ms": None}
            else:
                cmd = [a.molt, "--root", self.root, "upgrade", self.cid(m), "--bundle", bundle,
                       "--network", "keep" if m.startswith("keep") else "move", "--format", "json"]
                if a.health != "none":
                    cmd += ["--health", a.health]
                rc, o, e = run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                try:
                    report = json.loads(o)
                except ValueError:
                    report = None
                if rc != 0:
                    error = f"molt upgrade exited {rc}: {e.decode(errors='replace')[:400]} {o.decode(errors='replace')[:400]}"
        except RuntimeError as e:
            error = str(e)
        t1 = time.perf_counter()
        try:
            time.sleep(a.tail)
        finally:
            stop.set()
            t_stop = time.perf_counter()
            recs = fut.result(a.timeout + 10)
        r = {"method": m, "mode": mode, "round": rnd, "version": k, "wall": t1 - t0, "error": error, "stop": t_stop - t0,
             "report": report, "recs": [(s - t0, lat, o, v) for s, lat, o, v in recs]}
        self.results.append(r)
        if error:
            raise RuntimeError(f"{m} upgrade to 1.0.{k}: {error}")
        v, n = ask(addr, "VERSION"), ask(addr, "COUNT")
        if not v.startswith(f"version=1.0.{k} "):
            raise RuntimeError(f"{m} after upgrade to 1.0.{k}: VERSION answers {v!r}")
        if n != str(self.records[m]):
            raise RuntimeError(f"{m} after upgrade to 1.0.{k}: COUNT answers {n!r}, not {self.records[m]}")
        bad = {}
        for x in r["recs"]:
            if x[2] != "ok":
                bad[x[2]] = bad.get(x[2], 0) + 1
        say(f"round {rnd} {mode:6} {m:12} {(t1 - t0) * 1000:7.1f} ms, {len(recs)} requests"
            + (", " + ", ".join(f"{n} {o}" for o, n in sorted(bad.items())) if bad else ", all ok"))

    def bench(self):
        a = self.a
        for rnd in range(1, a.upgrades + 1):
            for mode in self.modes:
                for m in self.methods:
                    if INTERRUPTED.is_set():
                        raise Interrupted()
                    self.upgrade(rnd, mode, m)

    # ------------------------------------------------------------ clean-up
    def cleanup(self):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

        def quiet(cmd):
            try:
                return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, timeout=60)
            except Exception as e:  # noqa: BLE001 - clean-up goes on
                say(f"cleanup: {' '.join(cmd)}: {e}")
                return None

        if self.load:
            self.load.close()
        cgroups = set()  # of the containers' processes now, checked below once they are gone

        def note_cgroups(state):
            try:
                pid = json.loads(state.stdout)["pid"]
                for line in open(f"/proc/{pid}/cgroup"):
                    _, ctrl, path = line.rstrip("\n").split(":", 2)
                    base = "/sys/fs/cgroup" + ("/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "") if not ctrl \
                        else "/sys/fs/cgroup/" + (ctrl[5:] if ctrl.startswith("name=") else ctrl)
                    if path not in ("/", ""):
                        cgroups.add(base + path)
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                pass

        if os.path.isdir(self.runc_root):
            note_cgroups(quiet([self.a.runc, "--root", self.runc_root, "state", self.runc_id]))
        if os.path.isdir(self.root):
            p = quiet([self.a.molt, "--root", self.root, "list", "-q"])
            for cid in (p.stdout.decode().split() if p else []):
                note_cgroups(quiet([self.a.molt, "--root", self.root, "state", cid]))
            for cid in (p.stdout.decode().split() if p else []):
                p = quiet([self.a.molt, "--root", self.root, "delete", "--force", cid])
                if p is None or p.returncode != 0:
                    say(f"cleanup: molt delete --force {cid} failed: {p and p.stderr.decode()[:300]}")
            p = quiet([self.a.molt, "--root", self.root, "volume", "list"])
            if p and self.work in p.stdout.decode():
                say("cleanup: a molt volume is still attached:\n" + p.stdout.decode())
        if os.path.isdir(self.runc_root):
            quiet([self.a.runc, "--root", self.runc_root, "delete", "-f", self.runc_id])
        setns(f"/proc/self/fd/{self.orig_ns}")
        for ns in (self.runc_ns, self.ns):
            if os.path.exists(f"/run/netns/{ns}"):
                quiet(["ip", "netns", "del", ns])
        mounts = [l.split()[4] for l in open("/proc/self/mountinfo")]
        for mnt in sorted((x for x in mounts if x.startswith((self.work, self.root, self.runc_root))), reverse=True):
            p = quiet(["umount", mnt])  # not lazy first: a loop mount's device is freed with it
            if p and p.returncode != 0:
                p = quiet(["umount", "-l", mnt])
                if p and p.returncode != 0:
                    say(f"cleanup: umount {mnt}: {p.stderr.decode().strip()}")
        for m in self.methods:
            p = quiet(["losetup", "-j", f"{self.work}/volume-{m}.img"])
            for line in (p.stdout.decode().splitlines() if p else []):
                dev = line.split(":")[0]
                say(f"cleanup: detaching leftover {dev}")
                quiet(["losetup", "-d", dev])
        shutil.rmtree(self.work, ignore_errors=True)
        for d in (self.root, self.runc_root):
            shutil.rmtree(d, ignore_errors=True)
        # What is left with this run's name on it: say so (nothing is expected).
        left = [n for n in os.listdir("/run/netns") if self.tag in n] if os.path.isdir("/run/netns") else []
        left += [l for l in open("/proc/self/mountinfo") if self.tag in l or self.work in l]
        for dirpath, dirs, _ in os.walk("/sys/fs/cgroup"):
            left += [f"{dirpath}/{d}" for d in dirs if self.tag in d or f"cmp{self.pid}-" in d]
            if dirpath.count("/") >= 6:
                dirs[:] = []
        left += [c for c in sorted(cgroups) if os.path.isdir(c)]
        left += [f"process {d} ({open(f'/proc/{d}/cmdline', 'rb').read().replace(bytes(1), b' ').decode(errors='replace')[:80]})"
                 for d in os.listdir("/proc") if d.isdigit() and self._ours(d)]
        if left:
            say("cleanup: left behind: " + "; ".join(x.strip() for x in left))
        else:
            say(f"cleanup: done, nothing left ({len(cgroups)} cgroup directories checked)")


# ---------------------------------------------------------------------------------- results
def pct(xs, p):
    s = sorted(xs)
    return s[max(0, -(-p * len(s) // 100) - 1)] if s else None


def gap_ms(r):
    """The longest time without a successful answer around the upgrade command: between the
    completions of two answered requests, from the last answer before the command started to the
    first one after it ended: (ms, False). When nothing answered after it (every closed-loop client
    stuck until its timeout), a lower bound: the last answer to the end of the load, (ms, True)."""
    done = sorted(s + lat for s, lat, o, _ in r["recs"] if o == "ok")
    before = [t for t in done if t <= 0] or [-0.0]
    after = [t for t in done if t >= r["wall"]]
    win = [before[-1]] + [t for t in done if 0 < t < r["wall"]] + after[:1]
    if not after:
        return max([b - a for a, b in zip(win, win[1:])] + [r["stop"] - win[-1]]) * 1000, True
    return max(b - a for a, b in zip(win, win[1:])) * 1000, False


def fmt(x, nd=1):
    return "–" if x is None else f"{x:.{nd}f}"


def summarize(bench, meta):
    a = bench.a
    rows, steps = [], {}
    for mode in bench.modes:
        for m in bench.methods:
            rs = [r for r in bench.results if r["method"] == m and r["mode"] == mode]
            if not rs:
                continue
            kinds, n = {}, 0
            lat = []
            for r in rs:
                for s, l, o, _ in r["recs"]:
                    n += 1
                    if o != "ok":
                        kinds[o] = kinds.get(o, 0) + 1
                    elif 0 <= s <= r["wall"]:
                        lat.append(l * 1000)
            gaps = [gap_ms(r) for r in rs]
            g = [x for x, _ in gaps]
            unav = [r["report"]["unavailable_ms"] for r in rs if r["report"] and r["report"].get("unavailable_ms") is not None]
            for r in rs:
                for st in (r["report"] or {}).get("steps", []):
                    steps.setdefault(m, {}).setdefault(st["step"], []).append(st["millis"])
            other = sum(v for k, v in kinds.items() if k not in FAILS)
            rows.append({
                "method": m, "mode": mode, "upgrades": len(rs), "requests": n,
                **{k: kinds.get(k, 0) for k in FAILS}, "other": other,
                "other_kinds": {k: v for k, v in kinds.items() if k not in FAILS},
                "gap_med": statistics.median(g) if g else None, "gap_max": max(g) if g else None,
                "gap_missing": sum(1 for _, low in gaps if low),
                "p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat) if lat else None, "in_window": len(lat),
                "wall": statistics.median(r["wall"] * 1000 for r in rs),
                "unavail": statistics.median(unav) if unav else None,
            })
    L = []
    L.append("# `molt upgrade` compared with other ways to swap the application, under client load\n")
    L.append(f"`{meta['command']}`\n")
    L.append(f"- date: {meta['date']}; kernel {meta['kernel']}; {meta['cpus']} cpus ({meta['cpu']})")
    L.append(f"- load average (1, 5, 15 min): {meta['load_start']} at start, {meta['load_end']} at end")
    L.append(f"- {meta['molt_version']} (`{a.molt}`); {meta['runc_version']}")
    L.append(f"- {a.upgrades} rounds; in each round, for each load mode, one upgrade per method in the order "
             f"{', '.join(bench.methods)}; molt `--health {a.health}`; load from {a.lead} s before each "
             f"upgrade command to {a.tail} s after it ended; request timeout {a.timeout} s; closed loop "
             f"{a.clients} clients, open loop {a.rate:g} requests/s")
    if meta.get("status"):
        L.append(f"- **incomplete run**: {meta['status']}")
    L.append("")
    L.append("| method | load | upgrades | requests | refused | reset | closed | timeout | other "
             "| longest gap ms (median / max) | p50 ms | p99 ms | max ms | upgrade wall ms (median) "
             "| molt unavailable_ms (median) |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        other = str(r["other"]) + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(r["other_kinds"].items())) + ")"
                                   if r["other_kinds"] else "")
        gap = f"{fmt(r['gap_med'])} / {fmt(r['gap_max'])}" + (f" ({r['gap_missing']}× ≥: no answer after the upgrade)" if r["gap_missing"] else "")
        L.append(f"| {r['method']} | {r['mode']} | {r['upgrades']} | {r['requests']} | {r['refused']} | {r['reset']} "
                 f"| {r['closed']} | {r['timeout']} | {other} | {gap} | {fmt(r['p50'], 2)} | {fmt(r['p99'], 1)} "
                 f"| {fmt(r['max'], 1)} | {fmt(r['wall'])} | {fmt(r['unavail'])} |")
    L.append("")
    L.append("Step times, median ms over all upgrades of the method (molt: `steps` of `molt upgrade --format json`; "
             "runc: timed by this script):\n")
    for m, st in steps.items():
        L.append(f"- {m}: " + ", ".join(f"{k} {fmt(statistics.median(v))}" for k, v in st.items()))
    L.append("")
    L.append("Columns: *requests*: every request of the load during the upgrades (from the lead before to the tail "
             "after each upgrade command); *refused* (RST to the SYN), *reset* (connection reset after it was "
             "established, e.g. queued on a listening socket that was closed), *closed* (EOF before an answer), "
             "*timeout* (no answer within the request timeout), *other*: any other socket error, by errno; "
             "*longest gap*: per upgrade, the longest time between two successful answers (their completion "
             "times), from the last answer before the upgrade command started to the first after it ended (if "
             "nothing answered after it before the load stopped, the time from the last answer to the end of the "
             "load: a lower bound, marked ≥); "
             "*p50/p99/max*: latency (connect to answer) of the successful requests started while the upgrade "
             "command ran; *upgrade wall*: the upgrade command (molt) or the whole hand-written swap (runc) as "
             "the script timed it; *unavailable_ms*: molt's own figure, old process stopped to new process started.")
    L.append("")
    L.append("Methods: *keep-listen*: `molt upgrade --network keep` with `io.molt.listen=tcp:0.0.0.0:8080` (molt "
             "passes the same listening socket to the new app); *keep*: `--network keep`, the app opens its own "
             "socket; *move-listen* / *move*: `--network move` (the veth moves into the new container's own "
             "namespace; with the annotation molt opens a new socket there, the old one cannot follow); *runc*: "
             "`runc kill TERM`, wait for the init to exit, `runc delete -f`, `runc run -d` of the next version "
             "in the same prepared network namespace, wait for a TCP connect to succeed; its /data is a bind "
             "mount of one loop-mounted ext4 directory (runc has no volumes to hand over). Every method is its "
             "own container (own address, own volume); all run at the same time, only the one upgrading is under load.")
    return "\n".join(L) + "\n", rows


def plot(bench, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("no matplotlib: the plot is skipped (Debian: apt-get install python3-matplotlib)")
        return False
    a = bench.a
    methods = [m for m in bench.methods if any(r["method"] == m for r in bench.results)]
    modes = [x for x in bench.modes if any(r["mode"] == x for r in bench.results)]
    if not methods:
        return False
    fig, axes = plt.subplots(len(methods), len(modes), figsize=(7 * len(modes), 2.3 * len(methods) + 0.8),
                             sharex=True, sharey=True, squeeze=False)
    marks = {"refused": ("x", "red"), "reset": ("+", "magenta"), "closed": ("1", "orange"),
             "timeout": ("^", "black")}
    xmax = max(r["wall"] for r in bench.results) + a.tail
    for i, m in enumerate(methods):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            rs = [r for r in bench.results if r["method"] == m and r["mode"] == mode]
            walls = sorted(r["wall"] for r in rs)
            if walls:
                ax.axvspan(0, statistics.median(walls), color="0.85", zorder=0)
                ax.axvline(walls[-1], color="0.6", lw=0.8, ls=":", zorder=0)
            ok = [(s, max(l, 1e-5) * 1000) for r in rs for s, l, o, _ in r["recs"] if o == "ok"]
            if ok:
                ax.scatter([x for x, _ in ok], [y for _, y in ok], s=2, color="tab:blue", alpha=0.35,
                           linewidths=0, label="ok", rasterized=True)
            bad = {}
            for r in rs:
                for s, l, o, _ in r["recs"]:
                    if o != "ok":
                        bad.setdefault(o, []).append((s, max(l, 1e-5) * 1000))
            for o, pts in sorted(bad.items()):
                mk, col = marks.get(o, ("v", "brown"))
                ax.scatter([x for x, _ in pts], [y for _, y in pts], marker=mk, color=col, s=22,
                           label=f"{o} ({len(pts)})", zorder=3)
            ax.set_yscale("log")
            ax.set_xlim(-a.lead, xmax)
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{m}, {mode} loop ({len(rs)} upgrades)", fontsize=9)
            if j == 0:
                ax.set_ylabel("latency ms")
            if i == len(methods) - 1:
                ax.set_xlabel("request start, s relative to the upgrade command's start")
            ax.legend(loc="upper right", fontsize=7, markerscale=2)
    fig.suptitle("Latency of every request across the upgrade, all upgrades overlaid\n(grey: the median "
                 "upgrade command; dotted: the longest; a failure is marked at its time to fail)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# ---------------------------------------------------------------------------------- main
def main():
    p = argparse.ArgumentParser(prog="scripts/bench-upgrade --compare",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upgrades", type=int, default=10, help="rounds: upgrades per method and load mode (default 10)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list, in this order (default {','.join(METHODS)})")
    p.add_argument("--load", default="closed,open", help="load modes: closed, open or closed,open (default)")
    p.add_argument("--clients", type=int, default=4, help="closed loop: clients (default 4)")
    p.add_argument("--rate", type=float, default=200, help="open loop: requests per second (default 200)")
    p.add_argument("--timeout", type=float, default=10, help="request timeout, s (default 10)")
    p.add_argument("--lead", type=float, default=0.5, help="load before each upgrade command, s (default 0.5)")
    p.add_argument("--tail", type=float, default=1.5, help="load after each upgrade command ended, s (default 1.5)")
    p.add_argument("--health", default="tcp:8080", help='molt upgrade --health (default tcp:8080; "none": no gate)')
    p.add_argument("--stop-timeout", type=float, default=10, help="runc swap: wait for the old init this long (default 10)")
    p.add_argument("--molt", help="molt binary (default: target/release/molt of this repo)")
    p.add_argument("--runc", default="/usr/sbin/runc", help="runc binary (default /usr/sbin/runc)")
    p.add_argument("--rootfs", help="rootfs with bin/molt-testapp (default: scripts/build-rootfs into a temporary directory)")
    p.add_argument("--out", default=f"{REPO}/scripts/bench-results",
                   help="directory for upgrade-compare.md and upgrade-latency.png (default scripts/bench-results)")
    p.add_argument("--raw", help="also write every request as CSV to this file")
    p.add_argument("--cmdline", help=argparse.SUPPRESS)
    a = p.parse_args()
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    modes = [m.strip() for m in a.load.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            die(f"unknown method {m!r} (known: {', '.join(METHODS)})")
    for m in modes:
        if m not in MODES:
            die(f"unknown load mode {m!r} (closed, open)")
    if a.upgrades < 1 or a.clients < 1 or a.rate <= 0 or a.timeout <= 0:
        die("--upgrades and --clients must be >= 1, --rate and --timeout > 0")
    if os.geteuid() != 0:
        die("run as root (namespaces, loop devices, cgroups)")
    for t in ("ip", "mkfs.ext4", "losetup", "mount", "sysctl"):
        if not shutil.which(t):
            die(f"{t} not found")
    a.molt = os.path.abspath(a.molt or f"{REPO}/target/release/molt")
    if any(m != "runc" for m in methods) and not os.access(a.molt, os.X_OK):
        die(f"no molt executable {a.molt} (cargo build --release, or --molt PATH)")
    if "runc" in methods and not os.access(a.runc, os.X_OK):
        die(f"no runc at {a.runc} (apt-get install runc, or --runc PATH)")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        say("note: no matplotlib, there will be no plot (Debian: apt-get install python3-matplotlib)")
    os.makedirs(a.out, exist_ok=True)

    b = Bench(a)
    b.methods, b.modes = methods, modes
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    meta = {"command": a.cmdline or "scripts/bench-upgrade-compare.py " + " ".join(sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "kernel": platform.release(), "cpus": os.cpu_count(),
            "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
            "load_start": " ".join(open("/proc/loadavg").read().split()[:3])}
    status, interrupted = 0, False
    try:
        try:
            meta["molt_version"] = out([a.molt, "--version"]).splitlines()[0] if os.access(a.molt, os.X_OK) else "no molt"
            meta["runc_version"] = out([a.runc, "--version"]).splitlines()[0] if os.access(a.runc, os.X_OK) else "no runc"
            b.setup()
            if INTERRUPTED.is_set():
                raise Interrupted()
            say(f"{a.upgrades} rounds of {len(methods)} methods x {len(modes)} load modes "
                f"(load {meta['load_start']})")
            b.bench()
        except Interrupted:
            interrupted, status = True, 130
            meta["status"] = f"interrupted after {len(b.results)} upgrades"
        except RuntimeError as e:
            say(str(e))
            status = 1
            meta["status"] = f"stopped after {len(b.results)} upgrades: {e}"
        meta["load_end"] = " ".join(open("/proc/loadavg").read().split()[:3])
    finally:
        b.cleanup()
    if interrupted and not b.results:
        return status
    if a.raw:
        with open(a.raw, "w") as f:
            f.write("method,mode,round,version,start_s,latency_ms,outcome,answer\n")
            for r in b.results:
                for s, l, o, v in r["recs"]:
                    f.write(f"{r['method']},{r['mode']},{r['round']},{r['version']},{s:.6f},{l * 1000:.3f},{o},{v}\n")
    md, _ = summarize(b, meta)
    part = "-partial" if status else ""  # an incomplete run does not replace a complete one's files
    png = f"{a.out}/upgrade-latency{part}.png"
    plotted = plot(b, png)
    if plotted:
        md += f"\nPlot: `{os.path.relpath(png, REPO) if png.startswith(REPO) else png}`.\n"
    with open(f"{a.out}/upgrade-compare{part}.md", "w") as f:
        f.write(md)
    print(md)
    say(f"wrote {a.out}/upgrade-compare{part}.md" + (f" and {png}" if plotted else f" (no plot; {png} is not this run's)" if os.path.exists(png) else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
