#!/usr/bin/env python3
"""Every dashboard in dashboards/ type-checked against Grafana's published schema types.

Installs the pinned @grafana/schema and typescript (tests/integration/dashboards/package-lock.json,
`npm ci`, from the npm registry) into --work once per lock file, writes each dashboard JSON into a
TypeScript file as an object literal typed with schema.ts, and runs `tsc --noEmit`. Errors are
reported against the JSON file's own lines."""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards")
COPIED = ("package.json", "package-lock.json", "tsconfig.json", "schema.ts")
# Lines before the JSON text in a generated file; the JSON's line n is the file's line n + HEADER.
HEADER = ("import type { Dashboard } from '@grafana/schema';\n"
          "import type { Json, VmitapDashboard } from '../schema';\n"
          "export const dashboard: VmitapDashboard =\n")
HEADER_LINES = HEADER.count("\n")
FOOTER = ";\nexport const asGrafanaDashboard: Json<Dashboard> = dashboard;\n"


def npm_ci(work):
    lock = open(os.path.join(work, "package-lock.json"), "rb").read()
    digest = hashlib.sha256(lock).hexdigest()
    stamp = os.path.join(work, "node_modules", ".vmitap-lock-sha256")
    if os.path.exists(stamp) and open(stamp).read().strip() == digest:
        return True
    env = dict(os.environ, npm_config_cache=os.path.join(work, "cache"),
               npm_config_update_notifier="false")
    r = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                       cwd=work, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        print("FAIL: npm ci:\n" + r.stdout + r.stderr)
        return False
    with open(stamp, "w") as f:
        f.write(digest + "\n")
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dashboards", required=True, help="folder holding the dashboard JSON files")
    ap.add_argument("--work", required=True, help="build-tree folder for node_modules and output")
    args = ap.parse_args()
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            print(f"FAIL: {tool} not found (scripts/install-deps installs Debian's nodejs and npm)")
            return 1

    os.makedirs(args.work, exist_ok=True)
    for name in COPIED:
        shutil.copyfile(os.path.join(HERE, name), os.path.join(args.work, name))
    if not npm_ci(args.work):
        return 1

    generated = os.path.join(args.work, "generated")
    shutil.rmtree(generated, ignore_errors=True)
    os.makedirs(generated)
    sources = {}
    for name in sorted(os.listdir(args.dashboards)):
        if not name.endswith(".json"):
            continue
        stem = name[:-len(".json")]
        if not re.fullmatch(r"[A-Za-z0-9_-]+", stem):
            print(f"FAIL: {name}: use letters, digits, '-' and '_' in dashboard file names")
            return 1
        text = open(os.path.join(args.dashboards, name), encoding="utf-8").read()
        with open(os.path.join(generated, stem + ".ts"), "w", encoding="utf-8") as f:
            f.write(HEADER + text.rstrip() + FOOTER)
        sources[stem] = os.path.join(args.dashboards, name)
    if not sources:
        print(f"FAIL: no dashboard JSON in {args.dashboards}")
        return 1

    tsc = os.path.join(args.work, "node_modules", "typescript", "bin", "tsc")
    r = subprocess.run(["node", tsc, "--noEmit", "--pretty", "false", "-p", "tsconfig.json"],
                       cwd=args.work, capture_output=True, text=True)
    out = r.stdout + r.stderr

    def to_json_location(m):
        # The declaration line (a missing top-level key) counts as the JSON's first line.
        line = max(1, int(m.group(2)) - HEADER_LINES)
        return f"{sources[m.group(1)]}:{line}:{m.group(3)}"

    out = re.sub(r"generated/([A-Za-z0-9_-]+)\.ts\((\d+),(\d+)\)", to_json_location, out)
    if r.returncode != 0 or out.strip():
        print(out.rstrip())
        print(f"FAIL: tsc found errors ({len(sources)} dashboards checked)")
        return 1
    version = open(os.path.join(args.work, "node_modules", "@grafana", "schema",
                                "package.json")).read()
    version = re.search(r'"version":\s*"([^"]+)"', version).group(1)
    print(f"{len(sources)} dashboards match @grafana/schema {version}: {', '.join(sources)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
