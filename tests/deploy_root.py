"""deploy/README.md's install steps, run as written in a scratch root, for tests.

The steps name the host's paths (/opt/runner, /etc/nginx, /var/lib/runner, …).
Here every path under /etc, /opt, /var and /run is moved under a scratch directory
(``Scratch.moved``), which starts as a stock Debian host: Debian's /etc/nginx as the
package ships it (its default site enabled), the code in /opt/runner. The commands
that manage the host are stand-ins on PATH (``shim``) doing what Debian's would, in
the scratch root:

- ``apt-get install PKG…`` checks that the packages are installed (nothing is
  downloaded) and, as the nginx package does, starts nginx;
- ``systemctl enable --now UNIT`` starts the unit as systemd would from its file as
  installed: its ExecStart as its User and Group, in its WorkingDirectory, with its
  Environment= and EnvironmentFile= settings, after making its State-, Logs- and
  RuntimeDirectory for that user (the rest of the unit, limits and sandboxing, is
  not applied); ``systemctl reload nginx`` reloads nginx;
- ``nginx …`` is Debian's nginx reading the scratch root's /etc/nginx/nginx.conf.

The steps run in a network namespace of their own (``unshare --net``), where nginx
listens on port 80 and gunicorn on 8000 as written, apart from the host's ports.

The code's virtual environment is made without downloading anything: Debian's
python3 with the packages of the environment running the tests (same Python minor
version), so the README's ``make install`` finds it up to date.
"""
from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

from tests.server import ROOT, process_tree

README = ROOT / "deploy" / "README.md"
SECTION = "## Installing on Debian"
DEBIAN_PYTHON = "/usr/bin/python3"
NGINX = "/usr/sbin/nginx"  # by its path: on the steps' PATH, "nginx" is the stand-in
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The start of an absolute path under /etc, /opt, /var or /run (not inside a longer
# path or a URL: "http://127.0.0.1/readyz" stays).
HOST_PATH = re.compile(r"(?<![\w.:/$-])/(?=(?:etc|opt|var|run)/)")
# What a copy of the code leaves out.
NOT_CODE = shutil.ignore_patterns(".git", ".venv", "var", "__pycache__", "node_modules",
                                  ".pytest_cache", ".ruff_cache", ".hypothesis", "*.egg-info")
SHIMS = ("systemctl", "nginx", "apt-get")


def readme_steps(readme: Path = README) -> str:
    """The ``sh`` blocks of the README's install section, in order, as one script."""
    text = readme.read_text()
    section = text[text.index(SECTION):]
    section = section[:section.find("\n## ", len(SECTION))]
    blocks = re.findall(r"^( *)```sh\n(.*?)^\1```", section, re.S | re.M)
    return "\n".join(textwrap.dedent(body) for _, body in blocks)


def missing_tools() -> list[str]:
    """What this machine lacks to run the steps (root, Debian's nginx and python3, …)."""
    missing = [] if os.geteuid() == 0 else ["root"]
    missing += [tool for tool in ("unshare", "ip", "runuser", "useradd", "userdel", "make",
                                  "curl", "dpkg-query") if not shutil.which(tool)]
    if not os.path.exists(NGINX) or not os.path.exists("/etc/nginx/sites-available/default"):
        missing.append("Debian's nginx")
    try:
        version = subprocess.run([DEBIAN_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        version = None
    if version != str(sys.version_info[:2]):
        missing.append(f"{DEBIAN_PYTHON} of Python {sys.version_info[0]}.{sys.version_info[1]}")
    return missing


class Scratch:
    """A scratch root standing for the host's / (see the module's docstring)."""

    def __init__(self, root: Path):
        self.root = root

    @classmethod
    def from_env(cls) -> Scratch:
        return cls(Path(os.environ["DEPLOY_SCRATCH_ROOT"]))

    def moved(self, text: str) -> str:
        return HOST_PATH.sub(f"{self.root}/", text)

    def path(self, host_path: str) -> Path:
        return Path(self.moved(host_path))

    # -- the stock host ----------------------------------------------------------------

    def prepare(self) -> None:
        self.root.chmod(0o755)  # the service's user walks through it
        for directory in ("etc/systemd/system", "var/log/nginx", "var/log/journal", "var/lib",
                          "run", "opt", ".state", ".shims"):
            (self.root / directory).mkdir(parents=True, exist_ok=True)
        self._debian_nginx()
        self._code()
        for name in SHIMS:
            shim = self.root / ".shims" / name
            shim.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                            "from tests.deploy_root import shim\nsys.exit(shim(sys.argv))\n")
            shim.chmod(0o755)

    def _debian_nginx(self) -> None:
        """/etc/nginx as Debian's package installs it, its default site enabled."""
        etc = self.root / "etc" / "nginx"
        shutil.copytree("/etc/nginx", etc, symlinks=True)
        for path in list(etc.rglob("*")):
            if path.is_symlink() and os.readlink(path).startswith("/etc/"):
                target = self.moved(os.readlink(path))
                path.unlink()
                path.symlink_to(target)
            elif path.is_file() and not path.is_symlink():
                with contextlib.suppress(UnicodeDecodeError):
                    path.write_text(self.moved(path.read_text()))
        for name in os.listdir(etc / "sites-enabled"):
            (etc / "sites-enabled" / name).unlink()
        (etc / "sites-enabled" / "default").symlink_to(etc / "sites-available" / "default")
        if os.path.isdir("/var/www/html"):  # the default site's page
            shutil.copytree("/var/www/html", self.root / "var" / "www" / "html")

    def _code(self) -> None:
        """The code in /opt/runner, its virtual environment ready (``make install`` has
        nothing to do): Debian's python3 with the test environment's packages."""
        code = self.root / "opt" / "runner"
        shutil.copytree(ROOT, code, ignore=NOT_CODE)
        for path in (code / "deploy").iterdir():  # the files the steps install in /etc
            path.write_text(self.moved(path.read_text()))
        venv = code / ".venv"
        subprocess.run([DEBIAN_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
        [site] = (venv / "lib").glob("python3*/site-packages")
        (site / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        scripts = {"gunicorn": "from gunicorn.app.wsgiapp import run as main",
                   "flask": "from flask.cli import main"}
        for name, line in scripts.items():
            script = venv / "bin" / name
            script.write_text(f"#!{venv}/bin/python\nimport sys\n{line}\nsys.exit(main())\n")
            script.chmod(0o755)
        for name in (".installed", ".installed-test"):
            (venv / name).touch()

    # -- the steps ---------------------------------------------------------------------

    def run(self, script: str, timeout: float = 240) -> subprocess.CompletedProcess:
        """``script`` (host paths, moved here) in one root shell (``sh -eu``), in a
        network namespace of its own, from the directory /."""
        path = self.root / ".state" / "steps.sh"
        path.write_text(self.moved(script))
        env = {"PATH": f"{self.root / '.shims'}:{SYSTEM_PATH}", "HOME": "/root",
               "LANG": "C.UTF-8", "DEPLOY_SCRATCH_ROOT": str(self.root)}
        # Output to files, not pipes: the daemons the steps start may keep a copy of them.
        out, err = self.root / ".state" / "steps.out", self.root / ".state" / "steps.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            done = subprocess.run(
                ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec sh -eu "$0"',
                 str(path)], env=env, cwd="/", stdout=stdout, stderr=stderr, timeout=timeout)
        return subprocess.CompletedProcess(done.args, done.returncode, out.read_text(),
                                           err.read_text())

    def stop(self) -> None:
        """Stop what the steps started: the unit's processes, then nginx."""
        for pid_file in (self.root / ".state").glob("*.service.pid"):
            # gunicorn's quick shutdown (a TERM would wait for a worker still booting)
            _stop(int(pid_file.read_text()), signal.SIGINT, 5)
        pid_file = self.root / "run" / "nginx.pid"
        if pid_file.exists():
            _stop(int(pid_file.read_text()), signal.SIGQUIT, 10)

    def journal(self, unit: str = "runner") -> str:
        path = self.root / "var" / "log" / "journal" / f"{unit}.service.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the stand-ins -----------------------------------------------------------------

    def nginx_command(self, *args: str) -> list[str]:
        return [NGINX, "-c", str(self.root / "etc" / "nginx" / "nginx.conf"), *args]

    def nginx_running(self) -> bool:
        pid_file = self.root / "run" / "nginx.pid"
        return pid_file.exists() and _alive(int(pid_file.read_text() or 0))

    def start_or_reload_nginx(self) -> int:
        if self.nginx_running():
            return subprocess.run(self.nginx_command("-s", "reload")).returncode
        return subprocess.run(self.nginx_command()).returncode  # it forks into the background

    def start_unit(self, name: str) -> int:
        """Start ``name`` as systemd would from /etc/systemd/system/<name>.service."""
        unit = parse_unit(self.path(f"/etc/systemd/system/{name}.service").read_text())
        service = unit["Service"]
        user = pwd.getpwnam(service["User"][-1])
        gid = grp.getgrnam(service.get("Group", [user.pw_name])[-1]).gr_gid
        for key, base in (("RuntimeDirectory", "run"), ("StateDirectory", "var/lib"),
                          ("LogsDirectory", "var/log")):
            for directory in " ".join(service.get(key, [])).split():
                path = self.root / base / directory
                path.mkdir(parents=True, exist_ok=True)
                os.chown(path, user.pw_uid, gid)
                path.chmod(0o755)
        env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": user.pw_dir,
               "USER": user.pw_name, "LOGNAME": user.pw_name, "SHELL": user.pw_shell}
        for line in service.get("Environment", []):
            env.update(assignment.split("=", 1) for assignment in shlex.split(line))
        for line in service.get("EnvironmentFile", []):  # they win over Environment=
            path = self.path(line.removeprefix("-"))
            if not path.exists():
                if line.startswith("-"):
                    continue
                print(f"{name}.service: {path}: no such file", file=sys.stderr)
                return 1
            env.update(read_environment_file(path.read_text()))
        env = {key: self.moved(value) for key, value in env.items()}
        journal = self.root / "var" / "log" / "journal" / f"{name}.service.log"
        with open(journal, "ab") as out:
            process = subprocess.Popen(
                shlex.split(self.moved(service["ExecStart"][-1])),
                cwd=self.moved(service["WorkingDirectory"][-1]), env=env, user=user.pw_uid,
                group=gid, extra_groups=[], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        (self.root / ".state" / f"{name}.service.pid").write_text(str(process.pid))
        return 0

    def systemctl(self, args: list[str]) -> int:
        words = [arg for arg in args if not arg.startswith("-") or arg == "--now"]
        command, units = words[0], [u.removesuffix(".service") for u in words[1:] if u != "--now"]
        if command == "daemon-reload":
            return 0
        if command in ("enable", "start", "restart", "reload"):
            if command == "enable" and "--now" not in words:
                return 0
            for unit in units:
                if unit == "nginx":
                    status = self.start_or_reload_nginx()
                elif command in ("reload", "restart"):
                    pid = int((self.root / ".state" / f"{unit}.service.pid").read_text())
                    os.kill(pid, signal.SIGHUP if command == "reload" else signal.SIGTERM)
                    status = 0 if command == "reload" else self.start_unit(unit)
                else:
                    status = self.start_unit(unit)
                if status:
                    return status
            return 0
        print(f"systemctl stand-in: {command!r} is not known here", file=sys.stderr)
        return 1

    def apt_get(self, args: list[str]) -> int:
        packages = [arg for arg in args[1:] if not arg.startswith("-")]
        if args[:1] != ["install"]:
            print(f"apt-get stand-in: only install, not {args!r}", file=sys.stderr)
            return 100
        for package in packages:
            status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                                    capture_output=True, text=True).stdout
            if status != "install ok installed":
                print(f"E: {package} is not installed on this machine", file=sys.stderr)
                return 100
        if "nginx" in packages and not self.nginx_running():
            return self.start_or_reload_nginx()  # as the package's postinst does
        return 0


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: section → key → its values, in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def read_environment_file(text: str) -> dict[str, str]:
    """systemd's EnvironmentFile: NAME=value lines, # comments, values maybe quoted."""
    found = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[name.strip()] = value
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError):
        return False
    # A zombie waiting for its parent counts as gone.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def _stop(pid: int, signum: int, seconds: float) -> None:
    """Signal ``pid``; SIGKILL its whole tree if it is not gone within ``seconds``."""
    tree = process_tree(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    for each in tree:
        if _alive(each):
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)


def shim(argv: list[str]) -> int:
    """The stand-in for ``systemctl``, ``nginx`` or ``apt-get`` (``argv[0]``'s name)."""
    scratch, name, args = Scratch.from_env(), Path(argv[0]).name, argv[1:]
    if name == "nginx":
        os.execv(NGINX, scratch.nginx_command(*args))
    return {"systemctl": scratch.systemctl, "apt-get": scratch.apt_get}[name](args)
