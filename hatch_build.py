"""Build hook: compile ``shmconf/_speedups.c``, the reader's optional C paths.

shmconf works without it (``shmconf/_fastpath.py`` and ``shmconf/frozen.py``
hold the same behaviour in Python), so a machine without a C compiler still
installs shmconf, with a warning, and reads at Python speed. Environment:

- ``SHMCONF_SPEEDUPS=0``: do not build it.
- ``SHMCONF_SPEEDUPS=require``: fail the build if it cannot be built (the
  Makefile sets it: shmconf's own tests and benchmarks run on the C paths).

The extension is compiled with the C compiler Python was built with, into
the package directory (an editable install imports it from there), and the
wheel is tagged for this interpreter and platform.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("shmconf", "_speedups.c")


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        setting = os.environ.get("SHMCONF_SPEEDUPS", "").strip().lower()
        if setting in ("0", "no", "off", "false"):
            self.app.display_info("shmconf: SHMCONF_SPEEDUPS=0, the C speedups are not built")
            return
        try:
            target = compile_speedups(Path(self.root))
        except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
            if setting == "require":
                raise RuntimeError(f"shmconf: cannot build the C speedups: {exc}") from exc
            self.app.display_warning(
                f"shmconf: the C speedups were not built ({exc}); shmconf works without them, "
                "with slower reads (docs/design.md, 'C speedups')")
            return
        # A wheel for this interpreter and platform. (An editable wheel is
        # always tagged py3-none-any, and an installer may reuse it for another
        # Python: shmconf's Makefile reinstalls the project in each venv.)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        build_data["artifacts"].append(target.relative_to(self.root).as_posix())


def compile_speedups(root: Path) -> Path:
    """Compile the extension next to its source; returns the path of the built module."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        raise RuntimeError("a free-threaded Python: the speedups need the GIL")
    source = root / SOURCE
    target = source.with_name("_speedups" + str(sysconfig.get_config_var("EXT_SUFFIX")))
    compiler = shlex.split(str(sysconfig.get_config_var("CC") or "cc"))
    include = sysconfig.get_paths()["include"]
    partial = target.with_name(target.name + ".part")
    command = [*compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
               f"-I{include}", str(source), "-o", str(partial)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{shlex.join(command)} failed: {result.stderr.strip()[-2000:]}")
    # Renamed into place: a process importing the old build never maps a half-written file.
    partial.replace(target)
    return target
