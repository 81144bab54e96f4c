"""Debian tools the harness uses (wrk), installed with apt-get when missing and root."""

from __future__ import annotations

import os
import shutil
import subprocess


def ensure(tool: str, package: str | None = None) -> str | None:
    """The tool's path, installing its Debian package first if needed and possible."""
    found = shutil.which(tool)
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", package or tool]
    for argv in (install, ["apt-get", "update", "-qq"], install):
        if shutil.which(tool):
            break
        subprocess.run(argv, env=env, capture_output=True, timeout=600, check=False)
    return shutil.which(tool)
