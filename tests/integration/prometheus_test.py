#!/usr/bin/env python3
"""vmitap scraped by a real Prometheus: every dashboard query must return data, and /metrics
must pass `promtool check metrics`. Starts both processes on free loopback ports and stops them
by PID, also when a check fails."""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

RATE_INTERVAL = "10s"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def query(prom, expr):
    url = f"http://{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = json.loads(get(url))
    except urllib.error.HTTPError as e:
        body = json.loads(e.read().decode())
    if body.get("status") != "success":
        return None, body.get("error", "query failed")
    return body["data"]["result"], None


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def substitute(expr, variables):
    for name, value in variables.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


def label_values_query(q):
    """Grafana's label_values(metric, label) as the PromQL Grafana runs for it."""
    m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q.strip())
    if not m:
        return q
    return f"count by ({m.group(2)}) ({m.group(1)})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmitap", required=True)
    ap.add_argument("--dashboards", required=True)
    args = ap.parse_args()
    for tool in ("prometheus", "promtool"):
        if not shutil.which(tool):
            print(f"FAIL: {tool} not found (scripts/install-deps installs Debian's prometheus)")
            return 1

    tmp = tempfile.mkdtemp(prefix="vmitap-prom-")
    vmitap = prom_proc = None
    failures = []
    try:
        vmitap = subprocess.Popen(
            [args.vmitap, "demo", "--instructions", "0", "--max-seconds", "120",
             "--metrics", "127.0.0.1:0", "--hits", os.path.join(tmp, "hits.jsonl")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        target = None
        deadline = time.time() + 30
        while time.time() < deadline and target is None:
            line = vmitap.stderr.readline()
            m = re.search(r"metrics: http://(127\.0\.0\.1:\d+)/metrics", line)
            if m:
                target = m.group(1)
        if target is None:
            print("FAIL: vmitap did not report its metrics address")
            return 1

        promport = free_port()
        prom = f"127.0.0.1:{promport}"
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: vmitap
    static_configs:
      - targets: ["{target}"]
""")
        prom_proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp}/prometheus.yml",
             f"--storage.tsdb.path={tmp}/data", f"--web.listen-address={prom}",
             "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "prometheus.log"), "w"))

        # Wait until Prometheus has scraped long enough for rate() over RATE_INTERVAL.
        deadline = time.time() + 60
        ready = False
        while time.time() < deadline:
            try:
                res, _ = query(prom, f'count_over_time(up{{job="vmitap"}}[{RATE_INTERVAL}]) >= 5')
                if res:
                    ready = True
                    break
            except OSError:
                pass
            time.sleep(1)
        if not ready:
            print("FAIL: Prometheus did not scrape vmitap")
            return 1

        res, _ = query(prom, f'count by (domain) (vmitap_events_total{{instance="{target}"}})')
        domains = sorted(r["metric"]["domain"] for r in res or [])
        if not domains:
            print("FAIL: no vmitap_events_total series")
            return 1

        checked = 0
        for name in sorted(os.listdir(args.dashboards)):
            if not name.endswith(".json"):
                continue
            dash = json.load(open(os.path.join(args.dashboards, name)))
            multi = {v["name"]: v.get("multi", False) for v in dash["templating"]["list"]}
            variables = {
                "instance": target,
                "domain": ".*" if multi.get("domain") else domains[0],
                "__rate_interval": RATE_INTERVAL,
                "__range": "5m",
            }
            for v in dash["templating"]["list"]:
                if v["type"] != "query":
                    continue
                q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                expr = substitute(label_values_query(q), variables)
                res, err = query(prom, expr)
                checked += 1
                if not res:
                    failures.append(f"{name}: variable {v['name']}: {expr}: {err or 'no series'}")
            # A collapsed row holds its panels: they are queried when it is opened.
            panels = [q for p in dash["panels"] for q in [p] + p.get("panels", [])]
            for panel in panels:
                for t in panel.get("targets", []):
                    expr = substitute(t["expr"], variables)
                    res, err = query(prom, expr)
                    checked += 1
                    if not res:
                        failures.append(f"{name}: panel '{panel['title']}': {expr}: "
                                        f"{err or 'no series'}")

        exposition = get(f"http://{target}/metrics")
        lint = subprocess.run(["promtool", "check", "metrics"], input=exposition,
                              capture_output=True, text=True)
        if lint.returncode != 0 or lint.stdout.strip() or lint.stderr.strip():
            failures.append("promtool check metrics: " + (lint.stdout + lint.stderr).strip())

        stop(vmitap)
        out = vmitap.stderr.read()
        if vmitap.returncode != 0 or "verified:" not in out:
            failures.append(f"vmitap exited {vmitap.returncode} without a verified summary")

        for f in failures:
            print("FAIL:", f)
        print(f"{checked - len([f for f in failures if 'panel' in f or 'variable' in f])} passed, "
              f"{len(failures)} failed")
        return 1 if failures else 0
    finally:
        stop(vmitap)
        stop(prom_proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
