"""What a new user runs before notifier does anything: the Makefile, the scripts it calls,
.gitignore, the systemd unit's install recipe and the container image's documented run.
The recipes are parsed and followed step by step: every path the unit or the image uses must be
created by the steps they document."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from notifier.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "notifier.service"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
# Present on any Debian before the recipe runs.
SYSTEM_DIRS = {"/etc", "/opt", "/etc/systemd/system", "/var/lib", "/run"}


# --- Makefile ------------------------------------------------------------------------------


def make_dry_run(target: str, venv: Path) -> list[str]:
    out = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [line for line in out.stdout.splitlines() if not line.startswith("make")]


def installs(lines: list[str]) -> list[str]:
    return [line.split(" install ", 1)[1] for line in lines if "/pip install" in line]


def pretend_installed(venv: Path, *stamps: str) -> None:
    """A venv as `make` left it, with the given install stamps (newer than pyproject.toml)."""
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "bin" / "python").touch()
    for stamp in stamps:
        (venv / stamp).touch()


def test_make_run_installs_the_runtime_only(tmp_path: Path) -> None:
    lines = make_dry_run("run", tmp_path / "venv")
    assert installs(lines) == ["--quiet --upgrade pip", "--quiet -e ."]
    assert lines[-1].strip() == f"{tmp_path / 'venv'}/bin/notifier run"


def test_make_test_adds_the_test_extra(tmp_path: Path) -> None:
    lines = make_dry_run("test", tmp_path / "venv")
    assert installs(lines) == ["--quiet --upgrade pip", "--quiet -e .", "--quiet -e '.[test]'"]


def test_make_test_after_make_run_installs_only_the_test_extra(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    pretend_installed(venv, ".installed-runtime")
    assert installs(make_dry_run("test", venv)) == ["--quiet -e '.[test]'"]
    assert installs(make_dry_run("run", venv)) == []


def test_make_run_after_make_test_installs_nothing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    pretend_installed(venv, ".installed-runtime", ".installed-test")
    assert installs(make_dry_run("run", venv)) == []
    assert installs(make_dry_run("test", venv)) == []


# --- scripts/install-*-deps.sh -------------------------------------------------------------


def fake_system(tmp_path: Path, commands: list[str]) -> tuple[dict[str, str], Path]:
    """A PATH holding only `commands` (as stubs), the shell tools the scripts use, and an
    apt-get that logs its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt-get.log"
    (bin_dir / "apt-get").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'case "$*" in *--simulate*) for p in "$@"; do case "$p" in -*|install) ;; '
        '*) echo "Inst $p (1.0 Debian:12/stable [amd64])";; esac; done;; esac\n'
    )
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    for name in commands:
        (bin_dir / name).write_text("#!/bin/sh\n")
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    for tool in ("sh", "sed", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or tool)
    return {"PATH": str(bin_dir)}, log


def run_script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(ROOT / "scripts" / name)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=True,
    )


def test_browser_deps_install_only_what_is_missing_without_recommends_and_say_what(
    tmp_path: Path,
) -> None:
    env, log = fake_system(tmp_path, ["chromium"])  # chromedriver missing
    out = run_script("install-browser-deps.sh", env)
    assert log.read_text().splitlines() == [
        "update -q",
        "install --simulate --no-install-recommends chromium-driver",
        "install -y -q --no-install-recommends chromium-driver",
    ]
    assert "missing: chromium-driver; apt-get will install:" in out.stdout
    assert "  chromium-driver (1.0 Debian:12/stable [amd64])" in out.stdout


def test_deps_scripts_do_nothing_when_everything_is_there(tmp_path: Path) -> None:
    env, log = fake_system(
        tmp_path, ["chromium", "chromedriver", "logger", "curl", "openssl", "rsyslogd", "swaks"]
    )
    for script in ("install-browser-deps.sh", "install-test-deps.sh"):
        assert run_script(script, env).stdout == ""
    assert not log.exists()


def test_test_deps_name_the_debian_packages_of_the_missing_commands(tmp_path: Path) -> None:
    env, log = fake_system(tmp_path, ["curl", "rsyslogd"])
    run_script("install-test-deps.sh", env)
    assert "install -y -q --no-install-recommends bsdutils openssl" in log.read_text()


def test_swaks_comes_with_the_perl_tls_module_it_only_recommends(tmp_path: Path) -> None:
    env, log = fake_system(tmp_path, ["logger", "curl", "openssl", "rsyslogd"])
    run_script("install-test-deps.sh", env)
    assert "install -y -q --no-install-recommends swaks libnet-ssleay-perl" in log.read_text()


# --- .gitignore ----------------------------------------------------------------------------


def test_the_users_own_notifier_toml_is_ignored_but_the_example_is_not() -> None:
    def ignored(path: str) -> bool:
        check = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path], timeout=10)
        return check.returncode == 0

    assert ignored("notifier.toml")
    assert not ignored("examples/notifier.toml")


# --- deploy/notifier.service ---------------------------------------------------------------


@dataclass
class Host:
    """What the documented commands leave on a machine."""

    users: dict[str, str] = field(default_factory=dict)  # name -> home
    paths: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (group, mode)
    files: dict[str, str] = field(default_factory=dict)  # path -> content, for copied files
    enabled: list[str] = field(default_factory=list)

    def exists(self, path: str) -> bool:
        return path in self.paths or path in SYSTEM_DIRS

    def create(self, path: str, group: str = "root", mode: str = "") -> None:
        parent = os.path.dirname(path)
        assert self.exists(parent), f"{path}: its directory {parent} is not created before"
        assert group == "root" or group in self.users, f"{path}: no group {group!r} yet"
        self.paths[path] = (group, mode)


def run_recipe(commands: list[list[str]]) -> Host:
    host = Host()
    for argv in commands:
        match argv:
            case ["useradd", *options, name]:
                host.users[name] = options[options.index("--home-dir") + 1]
            case ["python3", "-m", "venv", venv]:
                host.create(venv)
                for name in ("bin", "bin/python", "bin/pip"):
                    host.create(f"{venv}/{name}")
            case [pip, "install", "."] if pip.endswith("/bin/pip"):
                assert host.exists(pip), f"{pip} is used before it is created"
                host.create(pip.removesuffix("pip") + "notifier")
            case ["install", *rest]:
                options, args = _install_args(rest)
                if "-d" in options:
                    for path in args:
                        host.create(path, options.get("-g", "root"), options.get("-m", ""))
                    continue
                source, target = args
                assert (ROOT / source).is_file(), f"install: {source} is not in the checkout"
                host.create(target, options.get("-g", "root"), options.get("-m", ""))
                host.files[target] = (ROOT / source).read_text()
            case ["sed", "-i", expression, path]:
                assert path in host.files, f"sed: {path} is not created before"
                _, pattern, replacement, _ = expression.split("|")
                edited = re.sub(pattern, replacement, host.files[path], count=1, flags=re.M)
                assert edited != host.files[path], f"sed: {expression} changes nothing"
                host.files[path] = edited
            case ["systemctl", "daemon-reload"]:
                pass
            case ["systemctl", "enable", "--now", unit]:
                assert host.exists(f"/etc/systemd/system/{unit}.service")
                host.enabled.append(unit)
            case _:
                raise AssertionError(f"a step the test does not know: {shlex.join(argv)}")
    return host


def _install_args(rest: list[str]) -> tuple[dict[str, str], list[str]]:
    options: dict[str, str] = {}
    args: list[str] = []
    words = iter(rest)
    for word in words:
        if word == "-d":
            options["-d"] = ""
        elif word in ("-m", "-o", "-g"):
            options[word] = next(words)
        else:
            args.append(word)
    return options, args


def unit_recipe() -> tuple[list[list[str]], list[str]]:
    """(the install steps, the example commands after them) from the unit's header comment."""
    steps: list[list[str]] = []
    examples: list[str] = []
    after_steps = False
    for line in UNIT.read_text().splitlines():
        if line.startswith("[Unit]"):
            break
        if line.startswith("#   "):
            (examples if after_steps else steps).append(line[4:])
        elif steps:
            after_steps = True
    return [shlex.split(step) for step in steps], examples


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_units_install_recipe_creates_every_path_the_unit_uses() -> None:
    steps, examples = unit_recipe()
    host = run_recipe(steps)
    unit = unit_settings()
    environment = dict(e.split("=", 1) for e in unit["Environment"])

    (user,) = unit["User"]
    assert unit["Group"] == [user]
    assert user in host.users
    state_dir = f"/var/lib/{unit['StateDirectory'][0]}"
    assert host.users[user] == state_dir == environment["NOTIFIER_DATA_DIR"]
    assert unit["WorkingDirectory"] == [state_dir]
    assert unit["StateDirectoryMode"] == ["0700"]

    for key in ("ExecStartPre", "ExecStart"):
        (command,) = unit[key]
        assert host.exists(command.split()[0]), f"{key}={command}: not installed by the recipe"
    assert unit["ExecStartPre"][0].split()[1:] == ["check-config", "--quiet"]
    assert unit["ExecStart"][0].split()[1:] == ["run"]

    (documentation,) = unit["Documentation"]
    assert host.exists(documentation.removeprefix("file://"))

    config = environment["NOTIFIER_CONFIG"]
    # Readable by the service's user, by no one else.
    assert host.paths[config] == (user, "0640")
    assert host.paths[os.path.dirname(config)] == (user, "0750")
    assert host.enabled == [UNIT.stem]
    assert f"/etc/systemd/system/{UNIT.name}" in host.paths

    # The CLI, as the README says to run it, sees the service's config and state.
    for example in examples:
        assert example.startswith(f"sudo -u {user} {unit['ExecStart'][0].split()[0]} ")
        assert f"--config {config}" in example


def test_the_installed_config_points_the_cli_at_the_services_data_dir(tmp_path: Path) -> None:
    steps, _ = unit_recipe()
    host = run_recipe(steps)
    environment = dict(e.split("=", 1) for e in unit_settings()["Environment"])
    config = tmp_path / "notifier.toml"
    config.write_text(host.files[environment["NOTIFIER_CONFIG"]])
    # What `sudo -u notifier notifier --config ...` reads: the file, without the unit's env.
    assert load_settings(config, environ={}).data_dir == environment["NOTIFIER_DATA_DIR"]


# --- deploy/Containerfile ------------------------------------------------------------------


def containerfile() -> tuple[list[tuple[str, str]], str]:
    """(the instructions as (KEYWORD, arguments), the header comment's text)."""
    text = CONTAINERFILE.read_text()
    header = "\n".join(
        line[2:] for line in text.splitlines() if line.startswith("#") and "FROM" not in line
    )
    header = header.split("\nFROM")[0]
    joined = re.sub(r"\\\n\s*", " ", text)
    instructions = []
    for line in joined.splitlines():
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            instructions.append((keyword, args.strip()))
    return instructions, header


def documented_run(header: str) -> list[str]:
    block = re.search(r"^  (podman run .*?)(?=^\S)", header, re.M | re.S)
    assert block, "the Containerfile documents no `podman run`"
    return shlex.split(block.group(1).replace("\\\n", " "))


def test_the_container_image_and_its_documented_run_agree() -> None:
    instructions, header = containerfile()
    by_keyword: dict[str, list[str]] = {}
    for keyword, args in instructions:
        by_keyword.setdefault(keyword, []).append(args)
    env = dict(pair.split("=", 1) for pair in shlex.split(by_keyword["ENV"][0]))
    run_steps = " && ".join(by_keyword["RUN"])
    user = by_keyword["USER"][0]
    assert f"--home-dir {env['NOTIFIER_DATA_DIR']} " in run_steps and run_steps.count(user) >= 2
    assert by_keyword["VOLUME"] == [f'["{env["NOTIFIER_DATA_DIR"]}"]']
    assert by_keyword["WORKDIR"][-1] == env["NOTIFIER_DATA_DIR"]
    # The config file the image reads exists in the image, for a mount to replace.
    assert f"> {env['NOTIFIER_CONFIG']}" in run_steps

    argv = documented_run(header)
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]
    assert any(m.split(":")[1] == env["NOTIFIER_CONFIG"] for m in mounts), mounts
    assert any(m.split(":")[1] == env["NOTIFIER_DATA_DIR"] for m in mounts), mounts
    secrets = {argv[i + 1] for i, a in enumerate(argv) if a == "--secret"}
    for name in secrets:
        assert f"podman secret create {name} " in header
    run_env = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-e")
    # Without an admin password the published status page answers 403.
    admin = run_env["NOTIFIER_WEB__ADMIN_PASSWORD_FILE"]
    assert admin.removeprefix("/run/secrets/") in secrets
    for path in re.findall(r'_file = "(/run/secrets/[^"]+)"', header):
        assert path.removeprefix("/run/secrets/") in secrets

    # Published ports = exposed ports = the ports the environment makes notifier listen on.
    published = {a.split(":", 1)[1] for i, a in enumerate(argv) if argv[i - 1] == "-p"}
    exposed = set(by_keyword["EXPOSE"][0].split())
    listening = {
        env["NOTIFIER_HTTP__LISTEN"].rsplit(":", 1)[1],
        env["NOTIFIER_SYSLOG__UDP"].rsplit(":", 1)[1] + "/udp",
        env["NOTIFIER_SYSLOG__TCP"].rsplit(":", 1)[1],
        env["NOTIFIER_TCP__LISTEN"].rsplit(":", 1)[1],
    }
    assert published == exposed == listening
    http_port = env["NOTIFIER_HTTP__LISTEN"].rsplit(":", 1)[1]
    assert f"127.0.0.1:{http_port}/healthz" in by_keyword["HEALTHCHECK"][0]


def test_the_documented_admin_password_variable_sets_the_admin_password(tmp_path: Path) -> None:
    _, header = containerfile()
    argv = documented_run(header)
    (name,) = [argv[i + 1].split("=", 1)[0] for i, a in enumerate(argv) if a == "-e"]
    secret = tmp_path / "notifier-admin"
    secret.write_text("correct horse\n")
    settings = load_settings(None, environ={name: str(secret)})
    assert settings.web.admin_password.get_secret_value() == "correct horse"
