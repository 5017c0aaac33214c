"""Checks for the system programs (and data files) that some commands need, with the Debian package to install.

  require_binaries(["espeak-ng", "sox", "fluidsynth"], files=["/usr/share/sounds/sf2/TimGM6mb.sf2"])
      raises MissingSystemPackage naming every missing program/file and the packages that provide them

The message always carries the apt-get line and the project's installer (launch/install_system_packages.sh),
so a command-line entry point can print it and exit 2 instead of showing a stack trace.
"""
from __future__ import annotations

import os
import shutil
from typing import Iterable

# Binary name -> Debian package that provides it.
BINARY_PACKAGES = {
    "espeak-ng": "espeak-ng",
    "sox": "sox",
    "fluidsynth": "fluidsynth",
}
# Data file -> Debian package that provides it.
FILE_PACKAGES = {
    "/usr/share/sounds/sf2/TimGM6mb.sf2": "timgm6mb-soundfont",
}
INSTALLER = "launch/install_system_packages.sh"


class MissingSystemPackage(RuntimeError):
  """Required system programs or files are absent. `packages` lists the Debian packages to install."""

  def __init__(self, missing: list[str], packages: list[str]):
    self.missing = missing
    self.packages = packages
    super().__init__(
        f"missing system dependencies: {', '.join(missing)}.\n"
        f"Install them with:  sudo apt-get update && sudo apt-get install -y {' '.join(packages)}\n"
        f"(or run `bash {INSTALLER}`, which installs everything the project needs)")


def require_binaries(names: Iterable[str], *, files: Iterable[str] = ()) -> None:
  """Raises MissingSystemPackage unless every named program is on PATH and every file exists."""
  missing = [(f"`{name}` (program)", BINARY_PACKAGES.get(name, name)) for name in names if shutil.which(name) is None]
  missing += [(f"{path} (file)", FILE_PACKAGES.get(path, os.path.basename(path))) for path in files
              if not os.path.isfile(path)]
  if missing:
    raise MissingSystemPackage([what for what, _ in missing], sorted({package for _, package in missing}))
