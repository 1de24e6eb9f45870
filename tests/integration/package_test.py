#!/usr/bin/env python3
"""The Debian package as an operator gets it. cpack builds it from the configured build
directory; its files, control fields and maintainer scripts are checked; then the unit's
ExecStart= runs from the extracted package on the simulated hypervisor, is reloaded with the
unit's ExecReload= and stopped with its stop signal, reporting READY/RELOADING/STOPPING on a
notify socket as it would to systemd. Nothing is installed into the system: CI has no
systemd, and `dpkg -i` there would change the machine the tests run on."""

import argparse
import glob
import gzip
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib

CONFFILE = "/etc/vmitap/vmitap.toml"
UNIT = "/usr/lib/systemd/system/vmitap.service"
MAN = "/usr/share/man/man8/vmitap.8.gz"
LOGROTATE = "/etc/logrotate.d/vmitap"
COMPLETION = "/usr/share/bash-completion/completions/vmitap"
DEFAULT_STOP_DEADLINE_S = 20  # drivers/defaults.hpp: stop_deadline
# Every file the package installs lies under one of these.
ROOTS = ("/usr/bin/vmitap", "/usr/share/vmitap/", MAN, "/usr/share/doc/vmitap/",
         "/usr/lib/systemd/system/vmitap.service", "/etc/vmitap/", LOGROTATE, COMPLETION)

failures = []


def check(ok, what):
    print(("ok:   " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)
    return ok


def run(argv, timeout=60, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def build_package(build_dir, out):
    r = run(["cpack", "--config", os.path.join(build_dir, "CPackConfig.cmake"), "-B", out],
            timeout=300)
    debs = glob.glob(os.path.join(out, "*.deb"))
    if r.returncode != 0 or len(debs) != 1:
        print(r.stdout + r.stderr)
        return None
    return debs[0]


def package_files(deb):
    """Path -> (mode string, owner) from `dpkg-deb -c`."""
    files = {}
    for line in run(["dpkg-deb", "-c", deb]).stdout.splitlines():
        parts = line.split(None, 5)
        path = parts[5].split(" -> ")[0].lstrip(".")
        if not path.endswith("/"):
            files[path] = (parts[0], parts[1])
    return files


def check_contents(deb, source_dir):
    files = package_files(deb)
    expected = [
        "/usr/bin/vmitap", UNIT, MAN, CONFFILE, LOGROTATE, COMPLETION,
        "/usr/share/doc/vmitap/README.md",
        "/usr/share/doc/vmitap/copyright", "/usr/share/doc/vmitap/changelog.gz",
        "/usr/share/vmitap/examples/demo.toml", "/usr/share/vmitap/examples/xen-host.toml",
        "/usr/share/vmitap/examples/profiles/web-1.isf.json",
        "/usr/share/vmitap/examples/profiles/db-1.isf.json",
    ]
    dashboards = os.path.join(source_dir, "dashboards")
    for dirpath, _, names in os.walk(dashboards):
        for n in names:
            rel = os.path.relpath(os.path.join(dirpath, n), dashboards)
            expected.append("/usr/share/vmitap/dashboards/" + rel)
    # Grafana's provisioning file points where the package puts the dashboards.
    provisioning = open(os.path.join(dashboards, "provisioning", "dashboards.yaml")).read()
    path = re.search(r"^\s*path:\s*(\S+)", provisioning, re.M)
    json_files = [p for p in expected if p.endswith(".json") and "/dashboards/" in p]
    check(path and json_files and all(p.startswith(path.group(1) + "/") for p in json_files),
          f"the provisioning file's path ({path.group(1) if path else None}) holds the installed "
          f"dashboards: {json_files}")
    missing = [p for p in expected if p not in files]
    check(not missing, f"the package holds binary, unit, man page, examples, dashboards, "
          f"conffile ({len(expected)} files){'; missing: ' + ', '.join(missing) if missing else ''}")
    stray = [p for p in files if not p.startswith(ROOTS)]
    check(not stray, "the package holds nothing else" + (f": {stray}" if stray else ""))
    check(files.get("/usr/bin/vmitap", ("",))[0] == "-rwxr-xr-x", "/usr/bin/vmitap is mode 0755")
    not_root = [p for p, (_, owner) in files.items() if owner != "root/root"]
    check(not not_root, "every file is owned by root" + (f": {not_root}" if not_root else ""))


def owning_package(path):
    """The package that installed a file and the names it provides (libspdlog1.10 provides
    libspdlog1.10-fmt9, the name its shlibs file gives). dpkg knows the file by one of its
    names (merged /usr)."""
    for candidate in (path, os.path.realpath(path)):
        r = run(["dpkg", "-S", candidate])
        if r.returncode == 0:
            package = r.stdout.splitlines()[0].split(":")[0]
            provides = run(["dpkg-query", "-W", "-f=${Provides}", package]).stdout
            return [package] + [p.split()[0] for p in provides.split(",") if p.strip()]
    return []


def check_control(deb, root):
    fields = dict(
        line.split(": ", 1) for line in
        run(["dpkg-deb", "-f", deb, "Package", "Architecture", "Depends", "Maintainer"])
        .stdout.splitlines() if ": " in line)
    check(fields.get("Package") == "vmitap", f"Package: {fields.get('Package')}")
    depends = {d.strip().split()[0] for d in fields.get("Depends", "").replace("|", ",").split(",")
               if d.strip()}
    print(f"      Depends: {fields.get('Depends')}")
    # Every library the binary links directly must come from a package it depends on.
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                        run(["readelf", "-d", os.path.join(root, "usr/bin/vmitap")]).stdout)
    ldd = dict(re.findall(r"^\s*(\S+) => (\S+)", run(["ldd", os.path.join(root, "usr/bin/vmitap")])
                          .stdout, re.M))
    uncovered = []
    for lib in needed:
        names = owning_package(ldd.get(lib, lib))
        if not depends.intersection(names):
            uncovered.append(f"{lib} ({names[0] if names else 'no package'})")
    check(needed and not uncovered,
          f"Depends covers the {len(needed)} libraries the binary links"
          + (f"; not: {', '.join(uncovered)}" if uncovered else ""))
    check("procps" in depends, "Depends has procps (the unit's ExecReload= runs /bin/kill)")

    conffiles = run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split()
    check(sorted(conffiles) == sorted([CONFFILE, LOGROTATE]),
          f"conffiles lists exactly {CONFFILE} and {LOGROTATE}: {conffiles}")


def check_completion(root):
    """The bash completion loads and offers vmitap's commands and a command's options."""
    script = os.path.join(root, COMPLETION.lstrip("/"))
    probe = (f'source "{script}"; complete -p vmitap; '
             'COMP_WORDS=(vmitap ""); COMP_CWORD=1; _vmitap; echo "${COMPREPLY[*]}"; '
             'COMP_WORDS=(vmitap check --c); COMP_CWORD=2; _vmitap; echo "${COMPREPLY[*]}"')
    r = run(["bash", "-c", probe])
    lines = r.stdout.splitlines()
    check(r.returncode == 0 and len(lines) == 3 and "run demo check domains symbols sim-profile help version" in lines[1]
          and lines[2] == "--config", f"bash completes commands and options: {lines} {r.stderr.strip()}")


def check_lintian(deb):
    """Debian's own checks of a binary package: no error, no warning (overrides none)."""
    r = run(["lintian", "--no-tag-display-limit", "--fail-on", "error,warning", deb])
    tags = [line for line in r.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    check(r.returncode == 0 and not tags,
          "lintian finds no error or warning" + ("".join("\n      " + t for t in tags)))
    for line in r.stdout.splitlines():
        if line.startswith(("I: ", "P: ", "X: ")):
            print("      lintian " + line)


def check_maintainer_scripts(deb, tmp):
    control = os.path.join(tmp, "control")
    run(["dpkg-deb", "-e", deb, control])
    scripts = {}
    for name in ("postinst", "prerm", "postrm"):
        path = os.path.join(control, name)
        if not check(os.path.isfile(path) and os.stat(path).st_mode & 0o777 == 0o755,
                     f"{name} is in the package, mode 0755"):
            continue
        check(open(path).readline().strip() == "#!/bin/sh", f"{name} runs with /bin/sh")
        r = run(["sh", "-n", path])
        check(r.returncode == 0, f"sh -n {name} {r.stderr.strip()}")
        scripts[name] = path
    if len(scripts) != 3:
        return

    # A systemctl and a deb-systemd-invoke that record their calls instead of acting.
    fakebin = os.path.join(tmp, "fakebin")
    os.makedirs(fakebin)
    calls_log = os.path.join(tmp, "systemctl.calls")
    for tool in ("systemctl", "deb-systemd-invoke"):
        with open(os.path.join(fakebin, tool), "w") as f:
            f.write(f'#!/bin/sh\necho "{tool} $*" >> "$SYSTEMCTL_CALLS"\n')
        os.chmod(os.path.join(fakebin, tool), 0o755)

    def script(name, *args, dpkg_root=None):
        if os.path.exists(calls_log):
            os.remove(calls_log)
        env = dict(os.environ, PATH=fakebin + ":" + os.environ["PATH"], SYSTEMCTL_CALLS=calls_log)
        env.pop("DPKG_ROOT", None)
        if dpkg_root:
            env["DPKG_ROOT"] = dpkg_root
        r = run([scripts[name], *args], env=env)
        calls = open(calls_log).read().splitlines() if os.path.exists(calls_log) else []
        check(r.returncode == 0, f"{name} {' '.join(args)} exits 0 {r.stderr.strip()}")
        return calls

    # Into another root (DPKG_ROOT), as dpkg does for a chroot: files there, no systemctl.
    other = os.path.join(tmp, "dpkg-root")
    logs = os.path.join(other, "var/log/vmitap")
    calls = script("postinst", "configure", "", dpkg_root=other)
    check(os.path.isdir(logs) and stat.S_IMODE(os.stat(logs).st_mode) == 0o750,
          "postinst configure creates /var/log/vmitap, mode 0750")
    check(calls == [], f"postinst into another root calls no systemctl: {calls}")
    calls = script("postinst", "configure", "0.1.0", dpkg_root=other)
    check(calls == [], f"postinst upgrade into another root calls no systemctl: {calls}")

    # Into this system: systemctl only where systemd is the init system (not in CI).
    systemd = os.path.isdir("/run/systemd/system")
    calls = script("prerm", "remove")
    check(calls == (["deb-systemd-invoke stop vmitap.service"] if systemd else []),
          f"prerm remove {'stops the service' if systemd else 'calls no systemctl without systemd'}: {calls}")
    calls = script("prerm", "upgrade", "0.3.0")
    check(calls == [], f"prerm upgrade leaves the service running: {calls}")
    calls = script("postrm", "remove")
    check(calls == (["systemctl --system daemon-reload"] if systemd else []),
          f"postrm remove {'reloads systemd' if systemd else 'calls no systemctl without systemd'}: {calls}")

    wants = os.path.join(other, "etc/systemd/system/multi-user.target.wants")
    os.makedirs(wants)
    os.symlink(UNIT, os.path.join(wants, "vmitap.service"))
    open(os.path.join(logs, "hits.jsonl"), "w").close()
    script("postrm", "purge", dpkg_root=other)
    check(not os.path.lexists(os.path.join(wants, "vmitap.service")),
          "postrm purge removes the service's enablement")
    check(os.path.isfile(os.path.join(logs, "hits.jsonl")), "postrm purge keeps hit records")
    os.remove(os.path.join(logs, "hits.jsonl"))
    script("postrm", "purge", dpkg_root=other)
    check(not os.path.exists(logs), "postrm purge removes an empty /var/log/vmitap")


def man_text(path):
    return gzip.open(path, "rt").read().replace("\\-", "-")


def section(text, start, stop):
    i = text.index(start)
    j = text.find(stop, i + len(start))
    return text[i:j if j >= 0 else len(text)]


def check_man_page(root, source_dir):
    man = os.path.join(root, MAN.lstrip("/"))
    r = subprocess.run(["groff", "-man", "-ww", "-z"], input=gzip.open(man).read(),
                       capture_output=True)
    r.stderr = r.stderr.decode()
    check(r.returncode == 0 and not r.stderr, f"groff -man -ww finds no problem in vmitap.8 {r.stderr.strip()}")
    page = man_text(man)
    check("@PROJECT_VERSION@" not in page and re.search(r'^\.TH VMITAP 8 .*"vmitap \d', page, re.M),
          "the man page names the version")
    readme = open(os.path.join(source_dir, "README.md")).read()
    usage = section(readme, "## Command line", "### Signals")
    words = set(re.findall(r"--[a-z][a-z-]+", usage)) | {
        "vmitap " + c for c in re.findall(r"^vmitap (\w+)", usage, re.M)}
    absent = sorted(w for w in words if w not in page)
    check(not absent, f"the man page has every command and option of README's Command line"
          + (f"; not: {absent}" if absent else ""))
    signals = set(re.findall(r"SIG[A-Z0-9]+", section(readme, "### Signals", "### Exit codes")))
    man_signals = set(re.findall(r"SIG[A-Z0-9]+", section(page, ".SH SIGNALS", ".SH ")))
    check(signals and signals <= man_signals,
          f"the man page's SIGNALS has README's {sorted(signals)}")
    codes = re.findall(r"^\| (\d+) \|", section(readme, "### Exit codes", "\n## "), re.M)
    man_codes = re.findall(r"^\.B (\d+)$", section(page, ".SH EXIT STATUS", ".SH "), re.M)
    check(codes and codes == man_codes, f"the man page's EXIT STATUS has README's codes {codes}: {man_codes}")


def unit_service_section(path):
    keys = {}
    in_service = False
    for line in open(path):
        line = line.strip()
        if line.startswith("["):
            in_service = line == "[Service]"
        elif in_service and "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys[k] = v
    return keys


def seconds(span):
    total = 0.0
    for n, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(min|s|ms)?", span):
        total += float(n) * {"min": 60, "s": 1, "ms": 0.001, "": 1}[unit or ""]
    return total


def check_unit(root, tmp):
    unit_path = os.path.join(root, UNIT.lstrip("/"))
    unit = unit_service_section(unit_path)
    check(unit.get("Type") == "notify", f"Type={unit.get('Type')}")
    start = shlex.split(unit.get("ExecStart", ""))
    check(start[:2] == ["/usr/bin/vmitap", "run"] and start[2:] == ["--config", CONFFILE],
          f"ExecStart= runs /usr/bin/vmitap run --config {CONFFILE}: {start}")
    check(unit.get("ExecReload") == "/bin/kill -HUP $MAINPID", f"ExecReload={unit.get('ExecReload')}")
    check(unit.get("Restart") == "on-failure", f"Restart={unit.get('Restart')}")
    check(set(unit.get("RestartPreventExitStatus", "").split()) == {"2", "4"},
          "no restart on an invalid config (2) or without Xen (4): "
          f"RestartPreventExitStatus={unit.get('RestartPreventExitStatus')}")
    deadline = tomllib.load(open(os.path.join(root, CONFFILE.lstrip("/")), "rb")) \
        .get("engine", {}).get("stop_deadline_seconds", DEFAULT_STOP_DEADLINE_S)
    timeout = seconds(unit.get("TimeoutStopSec", "90s"))
    check(timeout > max(deadline, DEFAULT_STOP_DEADLINE_S),
          f"TimeoutStopSec ({timeout:.0f} s) exceeds the stop deadline ({deadline} s in {CONFFILE})")
    check("PrivateDevices" not in unit or unit["PrivateDevices"] in ("no", "false"),
          "no PrivateDevices (it would hide /dev/xen)")
    allowed = re.findall(r"^DeviceAllow=(\S+)", open(unit_path).read(), re.M)
    check(unit.get("DevicePolicy") != "closed"
          or {"/dev/xen/privcmd", "/dev/xen/evtchn"} <= set(allowed),
          f"the device policy allows /dev/xen/privcmd and /dev/xen/evtchn: {allowed}")

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("note: systemd-analyze not found, `verify` skipped")
    else:
        # verify checks that ExecStart='s binary exists: point it at the extracted one.
        copy_dir = os.path.join(tmp, "unit")
        os.makedirs(copy_dir)
        copy = os.path.join(copy_dir, "vmitap.service")
        with open(copy, "w") as f:
            f.write(open(unit_path).read().replace("/usr/bin/vmitap", os.path.join(root, "usr/bin/vmitap")))
        r = run([analyze, "verify", "--man=no", copy])
        out = (r.stdout + r.stderr).strip()
        check(r.returncode == 0 and not out, f"systemd-analyze verify: {out or 'clean'}")
    return unit


def check_default_config(root, tmp):
    """The conffile is valid as shipped, but for its log directory, which is the host's."""
    logs = os.path.join(tmp, "log")
    os.makedirs(logs)
    text = open(os.path.join(root, CONFFILE.lstrip("/"))).read()
    check("/var/log/vmitap/" in text, f"{CONFFILE} writes hits under /var/log/vmitap/")
    config = os.path.join(tmp, "vmitap-host.toml")
    open(config, "w").write(text.replace("/var/log/vmitap/", logs + "/"))
    r = run([os.path.join(root, "usr/bin/vmitap"), "check", "--config", config])
    check(r.returncode == 0, f"vmitap check accepts {CONFFILE} (exit {r.returncode}) {r.stderr.strip()}")


def sim_config(root, tmp):
    """The packaged demo.toml, running until stopped, with its metrics and hits in the test's
    own places. Each replacement must match, so that a change to the example shows here."""
    examples = os.path.join(root, "usr/share/vmitap/examples")
    text = open(os.path.join(examples, "demo.toml")).read()
    hits = os.path.join(tmp, "hits.jsonl")
    for old, new in (('listen = "127.0.0.1:10474"', 'listen = "127.0.0.1:0"'),
                     ('path = "vmitap-hits.jsonl"', f'path = "{hits}"'),
                     ('profile = "profiles/', f'profile = "{examples}/profiles/'),
                     ("instructions = 3000000", "instructions = 0")):
        if old not in text:
            raise RuntimeError(f"examples/demo.toml has no `{old}` any more: adapt this test")
        text = text.replace(old, new)
    path = os.path.join(tmp, "sim.toml")
    open(path, "w").write(text)
    return path, hits


class notify_socket:
    """The socket systemd gives a Type=notify service in NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.seen = []

    def wait_for(self, state, proc, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(0.2)
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                if proc.poll() is not None:
                    return False
                continue
            self.seen += msg.splitlines()
            if state in msg.splitlines():
                return True
        return False


def run_unit_command_line(root, unit, tmp):
    config, hits = sim_config(root, tmp)
    argv = shlex.split(unit["ExecStart"])
    argv = [os.path.join(root, argv[0].lstrip("/"))] + [config if a == CONFFILE else a for a in argv[1:]]
    notify = notify_socket(os.path.join(tmp, "notify"))
    stderr_path = os.path.join(tmp, "vmitap.stderr")
    stop_signal = signal.Signals[unit.get("KillSignal", "SIGTERM")]
    proc = None
    try:
        with open(stderr_path, "w") as err:
            proc = subprocess.Popen(argv, cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, env=dict(os.environ, NOTIFY_SOCKET=notify.path))
        if not check(notify.wait_for("READY=1", proc, 30), "the unit's ExecStart= reports READY=1"):
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (os.path.exists(hits) and os.path.getsize(hits)):
            time.sleep(0.05)  # polls the condition: the first record reaching the file
        check(os.path.exists(hits) and os.path.getsize(hits) > 0, "hit records reach the sink's file")

        reload = [str(proc.pid) if a == "$MAINPID" else a for a in shlex.split(unit["ExecReload"])]
        check(run(reload).returncode == 0, f"ExecReload= ({' '.join(reload)}) exits 0")
        check(notify.wait_for("RELOADING=1", proc, 20), "a reload reports RELOADING=1")
        check(notify.wait_for("READY=1", proc, 20), "then READY=1")

        proc.send_signal(stop_signal)
        check(notify.wait_for("STOPPING=1", proc, 20), f"{stop_signal.name} reports STOPPING=1")
        try:
            code = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            code = None
        check(code == 0, f"vmitap exits 0 after {stop_signal.name} (the sim's ground truth holds): {code}")
        check("reload applied" in open(stderr_path).read(), "the reload was applied")
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        if failures:
            print(f"notify messages: {notify.seen}\nvmitap's stderr (last lines):\n"
                  + "\n".join(open(stderr_path).read().splitlines()[-25:]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--source-dir", required=True)
    args = ap.parse_args()
    for tool in ("cpack", "dpkg-deb", "dpkg-shlibdeps", "readelf", "groff", "lintian"):
        if not shutil.which(tool):
            print(f"FAIL: {tool} not found (scripts/install-deps installs it)")
            return 1

    tmp = tempfile.mkdtemp(prefix="vmitap-package-")
    try:
        t0 = time.monotonic()
        deb = build_package(args.build_dir, os.path.join(tmp, "out"))
        if not check(deb is not None, "cpack builds one .deb"):
            return 1
        print(f"      {os.path.basename(deb)}, {os.path.getsize(deb) >> 10} KiB, "
              f"{time.monotonic() - t0:.1f} s")
        root = os.path.join(tmp, "root")
        run(["dpkg-deb", "-x", deb, root])
        check_contents(deb, args.source_dir)
        check_lintian(deb)
        check_control(deb, root)
        check_maintainer_scripts(deb, tmp)
        check_man_page(root, args.source_dir)
        check_completion(root)
        unit = check_unit(root, tmp)
        check_default_config(root, tmp)
        run_unit_command_line(root, unit, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} check(s) failed" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
