"""`tvck serve` with many runs (docs/benchmarks.md, "Dashboard"): 200 generated runs of
100 epochs each (metrics.jsonl lines in the trainer's format, docs/json.md), then

- the first page: what the page fetches when it opens (the HTML, its four assets,
  /api/runs, /api/alerts and the metrics of the six runs it overlays first), one request
  after another on fresh connections, as wall time from the first request to the last
  byte (median of repeats);
- a new epoch on screen: a line appended to one run's metrics.jsonl (written and
  flushed), to the `epoch` event for it arriving on an open /api/events stream (median
  and worst of repeats, each on another run);
- the same first page in headless Chromium, when chromedriver is installed: from the
  navigation's start to the page's first full render (runs listed, curves drawn, alerts
  shown), as app.js records it (median of 5 loads);
- the server's memory: VmRSS and VmHWM (peak) from /proc after all of the above.

Standard library only. Usage: python3 benches/serve_bench.py TVCK_BIN [--runs N]
[--epochs N] [--repeats N]; prints a JSON object.
"""

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

METRICS = ["coverage", "hierarchy_a", "hierarchy_b", "richness_a", "richness_b",
           "dist_corr_a", "dist_corr_b", "r_v0", "r_v9", "mean_radius", "std_radius", "Q"]
LOSSES = ["total", "rich", "rich_hierarchy", "rich_coverage", "rich_richness",
          "rich_separation", "radial", "rank", "geodesic", "zero_structure"]


def line(rng, epoch):
    """A plausible epoch: coverage near full, losses falling, Q rising, with noise (so
    the rules raise about what a healthy fleet raises: little)."""
    def noisy(v, scale=0.01):
        return round(v + rng.gauss(0, scale), 6)
    m = {k: noisy(0.5, 0.05) for k in METRICS}
    m["coverage"] = round(min(1.0, 0.997 + rng.uniform(0, 0.004)), 6)
    m["covered"] = int(m["coverage"] * 19683)
    m["hierarchy_a"] = noisy(-0.6)
    m["hierarchy_b"] = noisy(-0.5 - 0.2 * (1 - 2.0 ** (-epoch / 20)))
    m["Q"] = noisy(0.2 + 0.3 * (1 - 2.0 ** (-epoch / 25)))
    m["curvature"] = 1.0
    loss = {k: noisy(0.2 + 1.8 * 2.0 ** (-epoch / 30), 0.005) for k in LOSSES}
    out = {"epoch": epoch, "lr": 0.001 if epoch else None,
           "loss": loss if epoch else None,
           "grad_norm": noisy(0.5, 0.05) if epoch else None,
           "metrics": m,
           "freeze": {"encoder_a": True, "encoder_b": False, "controller": False},
           "events": [],
           "frozen_sha256": {"encoder_A": "ab" * 32}}
    return json.dumps(out) + "\n"


def make_runs(root, runs, epochs):
    rng = random.Random(0)
    for r in range(runs):
        d = os.path.join(root, f"run_{r:03d}")
        os.makedirs(d)
        with open(os.path.join(d, "metrics.jsonl"), "w") as f:
            for e in range(epochs + 1):
                f.write(line(rng, e))


def get(addr, path):
    s = socket.create_connection(addr)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nConnection: close\r\n\r\n".encode())
    buf = bytearray()
    while True:
        b = s.recv(65536)
        if not b:
            break
        buf += b
    s.close()
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), (path, head[:100])
    return body


def first_page(addr):
    t = time.perf_counter()
    get(addr, "/")
    for a in ["app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"]:
        get(addr, "/assets/" + a)
    runs = json.loads(get(addr, "/api/runs"))
    get(addr, "/api/alerts")
    for r in runs["runs"][:6]:
        get(addr, "/api/runs/" + r["name"] + "/metrics")
    return time.perf_counter() - t, len(runs["runs"])


def open_events(addr):
    s = socket.create_connection(addr)
    s.sendall(f"GET /api/events HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    return s, buf.partition(b"\r\n\r\n")[2]


def wait_epoch(s, buf, run, epoch, timeout=10):
    s.settimeout(timeout)
    want = f'"run":"{run}","epoch":{epoch},'.encode()
    while True:
        while b"\n\n" in buf:
            block, _, buf = buf.partition(b"\n\n")
            if b"event: epoch" in block and want in block:
                return buf
        buf += s.recv(65536)


def browser_first_page(url, repeats):
    """Milliseconds from navigation to the page's first full render (runs listed, curves
    drawn, alerts shown: app.js's data-ready-ms) in headless Chromium, when chromedriver
    is installed; None otherwise."""
    import shutil
    import urllib.request
    drv = shutil.which("chromedriver")
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    if not drv or not chrome:
        return None
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = subprocess.Popen([drv, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                   headers={"Content-Type": "application/json"})
        return json.load(urllib.request.urlopen(r, timeout=120))["value"]

    try:
        for _ in range(100):
            try:
                call("GET", "/status")
                break
            except Exception:
                time.sleep(0.1)
        with tempfile.TemporaryDirectory() as prof:
            sid = call("POST", "/session", {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                "binary": chrome, "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                           "--disable-dev-shm-usage", "--window-size=1280,900",
                                           f"--user-data-dir={prof}"]}}}})["sessionId"]
            out = []
            for _ in range(repeats):
                call("POST", f"/session/{sid}/url", {"url": "about:blank"})
                call("POST", f"/session/{sid}/url", {"url": url})
                for _ in range(300):
                    ms = call("POST", f"/session/{sid}/execute/sync",
                              {"script": "return document.body && document.body.dataset.readyMs || null", "args": []})
                    if ms:
                        out.append(float(ms))
                        break
                    time.sleep(0.05)
            call("DELETE", f"/session/{sid}")
            return out
    finally:
        p.kill()
        p.wait()


def proc_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith(key + ":"):
                return int(l.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tvck")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        make_runs(root, a.runs, a.epochs)
        size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(root) for f in fs)
        t0 = time.perf_counter()
        p = subprocess.Popen([a.tvck, "serve", root, "--port", "0"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            first = p.stdout.readline()
            startup = time.perf_counter() - t0
            url = first.split()[2]
            host, port = url[len("http://"):].rstrip("/").split(":")
            addr = (host, int(port))
            pages = []
            n = 0
            for _ in range(a.repeats):
                dt, n = first_page(addr)
                pages.append(dt)
            assert n == a.runs, n
            browser = browser_first_page(f"http://{host}:{port}/", 5)
            s, buf = open_events(addr)
            lat = []
            rng = random.Random(1)
            for i in range(a.repeats):
                run = f"run_{(i * 7) % a.runs:03d}"
                epoch = a.epochs + 1 + i
                text = line(rng, epoch)
                # Not in step with the server's poll: a random phase.
                time.sleep(rng.uniform(0.05, 0.3))
                with open(os.path.join(root, run, "metrics.jsonl"), "a") as f:
                    f.write(text)
                    f.flush()
                    t = time.perf_counter()
                buf = wait_epoch(s, buf, run, epoch)
                lat.append(time.perf_counter() - t)
            s.close()
            out = {
                "runs": a.runs, "epochs": a.epochs, "metrics_bytes": size,
                "startup_s": round(startup, 3),
                "first_page_ms_median": round(statistics.median(pages) * 1000, 1),
                "first_page_ms_max": round(max(pages) * 1000, 1),
                "browser_first_render_ms_median": round(statistics.median(browser), 1) if browser else None,
                "browser_first_render_ms_max": round(max(browser), 1) if browser else None,
                "new_epoch_ms_median": round(statistics.median(lat) * 1000, 1),
                "new_epoch_ms_max": round(max(lat) * 1000, 1),
                "rss_mib": round(proc_kib(p.pid, "VmRSS") / 1024, 1),
                "peak_rss_mib": round(proc_kib(p.pid, "VmHWM") / 1024, 1),
                "repeats": a.repeats,
            }
            print(json.dumps(out, indent=2))
        finally:
            p.kill()
            p.wait()


if __name__ == "__main__":
    sys.exit(main())
