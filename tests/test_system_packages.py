"""`make test` never installs system packages; `make demo` does (when root) or stops with the apt-get line; tests
that need the demo synthesisers skip, naming the packages, when they are missing."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import skip_without_demo_packages

REPO = Path(__file__).resolve().parent.parent
INSTALLER = REPO / "launch" / "install_system_packages.sh"
BASH = shutil.which("bash")
REQUIRED = ("espeak-ng", "sox", "fluidsynth")

needs_make = pytest.mark.skipif(shutil.which("make") is None or BASH is None, reason="needs make and bash")


def _fake_bin(folder: Path, root: bool, apt_get: str | None = None) -> Path:
  """A PATH folder without the demo synthesisers: `id` says root or not, `apt-get` (optional) logs its calls."""
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "id").write_text(f"#!/bin/sh\necho {0 if root else 1000}\n")
  if apt_get is not None:
    (folder / "apt-get").write_text(f"#!/bin/sh\necho \"$*\" >> {folder / 'apt.log'}\n{apt_get}\n")
  os.symlink(BASH, folder / "bash")
  for script in folder.iterdir():
    script.chmod(0o755)
  return folder


def _installer(path: Path) -> subprocess.CompletedProcess:
  return subprocess.run([BASH, str(INSTALLER)], env={"PATH": str(path)}, capture_output=True, text=True,
                        timeout=60)


@needs_make
def test_test_targets_never_install_system_packages_and_demo_does():
  for target in ("test", "test-slow", "test-wheel"):
    plan = subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert "install_system_packages" not in plan.stdout and "apt-get" not in plan.stdout, target
  for target in ("demo", "setup"):
    plan = subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True, text=True, timeout=60)
    assert "install_system_packages" in plan.stdout, target


@needs_make
def test_make_demo_without_root_stops_with_the_apt_line(tmp_path):
  path = _fake_bin(tmp_path / "bin", root=False)
  stamp = ".venv/.installed-cpu"   # taken as made (-o): only sysdeps runs
  demo = subprocess.run([shutil.which("make"), "-C", str(REPO), "-o", stamp, "demo"],
                        env={"PATH": str(path)}, capture_output=True, text=True, timeout=60)
  assert demo.returncode != 0 and "alp_jax.demo" not in demo.stdout
  assert f"sudo apt-get update && sudo apt-get install -y {' '.join(REQUIRED)}" in demo.stderr
  assert "Traceback" not in demo.stdout + demo.stderr


@needs_make
def test_installer_as_root_installs_required_then_optional_best_effort(tmp_path):
  # The optional allocator fails to install: a note, exit 0.
  path = _fake_bin(tmp_path / "ok", root=True, apt_get='case "$*" in *tcmalloc*) exit 100;; esac')
  done = _installer(path)
  assert done.returncode == 0, done.stderr
  calls = (path / "apt.log").read_text().splitlines()
  assert calls[0] == "update -qq" and set(REQUIRED) <= set(calls[1].split())
  assert "libtcmalloc-minimal4" in calls[2] and "libtcmalloc" not in calls[1]
  assert "note: optional libtcmalloc-minimal4 not installed" in done.stdout
  # A required package fails to install: the apt-get line, exit 1.
  path = _fake_bin(tmp_path / "fails", root=True, apt_get='case "$*" in *sox*) exit 100;; esac')
  failed = _installer(path)
  assert failed.returncode == 1 and "ERROR: missing system packages: espeak-ng sox fluidsynth" in failed.stderr


def test_tests_that_synthesise_skip_naming_the_packages(monkeypatch):
  monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
  with pytest.raises(pytest.skip.Exception, match=r"(?s)missing system dependencies: `espeak-ng`.*apt-get install -y "):
    skip_without_demo_packages()


def test_demo_corpus_without_the_synthesisers_exits_2_without_a_traceback(tmp_path, monkeypatch, capsys):
  from alp_jax.demo import corpus as demo_corpus
  monkeypatch.setenv("PATH", str(tmp_path))
  assert demo_corpus.main(["--out", str(tmp_path / "out"), "--clips", "4"]) == 2
  err = capsys.readouterr().err
  assert "apt-get install -y" in err and "Traceback" not in err and not (tmp_path / "out" / "raw").exists()
