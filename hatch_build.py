"""Build hook: compile ``shmconf/_speedups.c``, the reader's optional C paths.

shmconf works without it (``shmconf/_fastpath.py`` and ``shmconf/frozen.py``
hold the same behaviour in Python), so a machine without a C compiler still
installs shmconf and reads at Python speed; the build says why it skipped them
(pip shows that with ``-v``), and ``shmconf --version`` says whether they are
on. Environment:

- ``SHMCONF_SPEEDUPS=0``: do not build it.
- ``SHMCONF_SPEEDUPS=require``: fail the build if it cannot be built, and
  treat compiler warnings as errors (the Makefile sets it: shmconf's own
  tests and benchmarks run on the C paths).

The extension is compiled with ``$CC``, else the C compiler Python was built
with: for an editable install into the package directory (it imports it from
there), for a wheel into a scratch directory. The wheel is tagged for this
interpreter and platform.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("shmconf", "_speedups.c")


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        setting = os.environ.get("SHMCONF_SPEEDUPS", "").strip().lower()
        root = Path(self.root)
        editable = version == "editable"
        if setting in ("0", "no", "off", "false"):
            if editable:  # an editable install imports whatever build lies in the package
                remove_built(root)
            self.app.display_info("shmconf: SHMCONF_SPEEDUPS=0, the C speedups are not built")
            return
        # An editable install imports the build from the package directory; a
        # wheel takes it from a scratch directory, leaving the source tree alone.
        if editable:
            into = built_path(root).parent
        else:
            into = self.scratch = Path(tempfile.mkdtemp(prefix="shmconf-build-"))
        try:
            # Warnings are errors in shmconf's own builds only: a newer
            # compiler's new warning must not cost a user the speedups.
            target = compile_speedups(root, into, strict=setting == "require")
        except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
            if editable:  # an earlier build must not outlive this one
                remove_built(root)
            else:
                shutil.rmtree(into, ignore_errors=True)
            if setting == "require":
                raise RuntimeError(f"shmconf: cannot build the C speedups: {exc}") from exc
            self.app.display_warning(
                f"shmconf: the C speedups were not built ({exc}); shmconf works without them, "
                "with slower reads (docs/design.md, 'C speedups'; `shmconf --version` says "
                "whether they are on)")
            return
        # A wheel for this interpreter and platform. (An editable wheel is
        # always tagged py3-none-any, and an installer may reuse it for another
        # Python: shmconf's Makefile reinstalls the project in each venv.)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        build_data["force_include"][str(target)] = f"shmconf/{target.name}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def built_path(root: Path) -> Path:
    """Where this interpreter's build of the extension lies (an editable install imports it)."""
    return (root / SOURCE).with_name("_speedups" + str(sysconfig.get_config_var("EXT_SUFFIX")))


def remove_built(root: Path) -> None:
    built_path(root).unlink(missing_ok=True)


def compile_speedups(root: Path, into: Path, *, strict: bool = False) -> Path:
    """Compile the extension into the directory ``into``; returns the built module's path."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        raise RuntimeError("a free-threaded Python: the speedups need the GIL")
    source = root / SOURCE
    target = into / built_path(root).name
    # $CC first, as setuptools does; else the compiler Python was built with.
    compiler = shlex.split(os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc"))
    include = sysconfig.get_paths()["include"]
    partial = target.with_name(target.name + ".part")
    command = [*compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra",
               *(["-Werror"] if strict else []), f"-I{include}", str(source), "-o", str(partial)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{shlex.join(command)} failed (exit status {result.returncode})"
                           f": {result.stderr.strip()[-2000:] or 'no message'}")
    # Renamed into place: a process importing the old build never maps a half-written file.
    partial.replace(target)
    return target
