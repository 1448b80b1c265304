"""KenLM's command-line tools (lmplz, build_binary, query): find them, or build them from source.

The ``kenlm`` pip package only has the query API; the tools that *build* LMs come from the kenlm
source, which the kenlm sdist on PyPI carries. ``python -m ctclab.lm.tools install`` downloads it with
pip, builds with cmake + make into ``<repo>/.tools/kenlm/bin`` (``$CTCLAB_TOOLS_DIR/kenlm/bin``
when set) and is a no-op once the tools exist there or on PATH. ``python -m ctclab.lm.tools which``
prints where each tool is.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ctclab.core.options import HelpFormatter
from ctclab.lm.constants import TOOLS_DIR_ENV

TOOL_NAMES = ("lmplz", "build_binary", "query")
# Pinned so every machine builds the same tools; 0.3.0 is the sdist the query API comes from too.
KENLM_SDIST = "kenlm==0.3.0"
# 6 is KenLM's default maximum order; orders above it need a rebuild (costs memory per state).
KENLM_MAX_ORDER = 6
# The machines this runs on have 2 shared cores: more jobs only thrash.
DEFAULT_BUILD_JOBS = 2
# Debian packages the build needs (kept in sync with .ci/setup's list).
APT_PACKAGES = ("cmake", "make", "g++", "libboost-program-options-dev", "libboost-system-dev",
                "libboost-thread-dev", "libboost-test-dev", "libeigen3-dev", "zlib1g-dev",
                "libbz2-dev", "liblzma-dev")
INSTALL_HINT = "python -m ctclab.lm.tools install"
REPO_ROOT = Path(__file__).resolve().parents[1]


class ToolNotFoundError(FileNotFoundError):
    """A KenLM tool is neither built for the project nor on PATH."""


@dataclass(frozen=True)
class KenLMTools:
    """Paths of the three KenLM executables."""

    lmplz: Path
    build_binary: Path
    query: Path


def tools_root() -> Path:
    """``$CTCLAB_TOOLS_DIR`` or ``<repo>/.tools`` (git-ignored)."""
    env = os.environ.get(TOOLS_DIR_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / ".tools"


def bin_dir() -> Path:
    """Where ``install`` puts the executables: ``<tools root>/kenlm/bin``."""
    return tools_root() / "kenlm" / "bin"


def find_tool(name: str) -> Path:
    """Path of KenLM tool ``name``: the project's build first, then PATH.

    Raises ValueError for an unknown name and ToolNotFoundError saying to run the install command.
    """
    if name not in TOOL_NAMES:
        raise ValueError(f"unknown KenLM tool {name!r}; valid: {list(TOOL_NAMES)}")
    local = bin_dir() / name
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ToolNotFoundError(f"KenLM's {name} was not found in {bin_dir()} nor on PATH; build it "
                            f"with: {INSTALL_HINT}  (needs cmake and: apt-get install "
                            f"{' '.join(APT_PACKAGES)})")


def find_tools() -> KenLMTools:
    """All three tools, or ToolNotFoundError for the first missing one."""
    return KenLMTools(*(find_tool(n) for n in TOOL_NAMES))


def install(force: bool = False, jobs: int = DEFAULT_BUILD_JOBS, source: Path | None = None,
            verbose: bool = True) -> KenLMTools:
    """Build lmplz, build_binary and query into :func:`bin_dir` unless already available.

    force: rebuild even when the tools exist. source: a kenlm source tarball or directory to build
    from (offline); by default the kenlm sdist is fetched with pip into ``<tools root>/src``.
    Each executable is copied in atomically, so an interrupted build never leaves half a tool.
    """
    if not force:
        try:
            tools = find_tools()
        except ToolNotFoundError:
            pass
        else:
            _log(verbose, f"KenLM tools already available: {tools.lmplz.parent}")
            return tools
    _check_build_prerequisites()
    work = tools_root() / "src"
    work.mkdir(parents=True, exist_ok=True)
    src_dir = _source_dir(source, work, verbose)
    # One build folder per source tree: CMake refuses a cache made for another source folder.
    key = hashlib.sha1(str(src_dir.resolve()).encode()).hexdigest()[:8]
    build = work / f"build-{src_dir.name}-{key}"
    build.mkdir(exist_ok=True)
    _run(["cmake", "-S", str(src_dir), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
          f"-DKENLM_MAX_ORDER={KENLM_MAX_ORDER}", "-DCOMPILE_TESTS=OFF"], verbose)
    _run(["cmake", "--build", str(build), "--target", *TOOL_NAMES, "--", f"-j{jobs}"], verbose)
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    for name in TOOL_NAMES:
        built = build / "bin" / name
        if not built.is_file():
            raise RuntimeError(f"the build finished but {built} is missing; see the output above")
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
        os.close(fd)
        shutil.copy2(built, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, out / name)
    _log(verbose, f"KenLM tools installed in {out}")
    return KenLMTools(*(out / n for n in TOOL_NAMES))


def _check_build_prerequisites() -> None:
    missing = [tool for tool in ("cmake", "make", "c++") if shutil.which(tool) is None]
    if not Path("/usr/include/boost/program_options.hpp").exists() and not os.environ.get(
            "BOOST_ROOT"):
        missing.append("Boost headers")
    if missing:
        raise RuntimeError(f"cannot build KenLM: missing {', '.join(missing)}; on Debian/Ubuntu: "
                           f"apt-get install {' '.join(APT_PACKAGES)} (or run .ci/setup)")


def _source_dir(source: Path | None, work: Path, verbose: bool) -> Path:
    """A directory with kenlm's CMakeLists.txt: the given one, or an extracted (downloaded) sdist."""
    if source is not None:
        source = Path(source)
        if source.is_dir():
            if not (source / "CMakeLists.txt").is_file():
                raise FileNotFoundError(f"{source}: no CMakeLists.txt; pass the kenlm source root")
            return source
        if not source.is_file():
            raise FileNotFoundError(f"kenlm source not found: {source}")
        tarball = source
    else:
        tarballs = sorted(work.glob("kenlm-*.tar.gz"))
        if not tarballs:
            _log(verbose, f"downloading the kenlm source ({KENLM_SDIST}) with pip")
            _download_sdist(work, verbose)
            tarballs = sorted(work.glob("kenlm-*.tar.gz"))
        if not tarballs:
            raise FileNotFoundError(f"pip left no kenlm-*.tar.gz in {work}")
        tarball = tarballs[-1]
    target = work / tarball.name.removesuffix(".tar.gz")
    if not (target / "CMakeLists.txt").is_file():
        with tarfile.open(tarball) as tar:
            tar.extractall(work, filter="data")
    if not (target / "CMakeLists.txt").is_file():
        raise FileNotFoundError(f"{tarball} did not unpack to {target}/CMakeLists.txt")
    return target


def _download_sdist(work: Path, verbose: bool) -> None:
    """pip download the kenlm sdist. pip prepares its metadata: without build isolation when the
    venv has setuptools (fast, nothing else fetched), else isolated (pip fetches kenlm's build
    requirements as wheels)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "kenlm",
           KENLM_SDIST, "-d", str(work)]
    hint = ("pip could not fetch the kenlm sdist (offline?); download kenlm-*.tar.gz elsewhere "
            "and pass it: python -m ctclab.lm.tools install --source FILE")
    try:
        _run([*cmd, "--no-build-isolation"], verbose, hint)
    except RuntimeError:
        _log(verbose, "retrying with pip's build isolation")
        _run(cmd, verbose, hint)


def _run(cmd: list[str], verbose: bool, hint: str = "") -> None:
    _log(verbose, "$ " + " ".join(cmd))
    result = subprocess.run(cmd, check=False, stdout=None if verbose else subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = "" if verbose else "\n" + (result.stdout or "")[-3000:]
        raise RuntimeError(f"command failed (exit {result.returncode}): {' '.join(cmd)}"
                           f"{tail}{chr(10) + hint if hint else ''}")


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(f"[lm.tools] {message}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ctclab.lm.tools", description=__doc__,
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{install,which}")
    inst = sub.add_parser("install", help="build lmplz/build_binary/query (no-op when present)",
                          description="Build KenLM's lmplz, build_binary and query from source "
                          f"into <tools root>/kenlm/bin\n(${TOOLS_DIR_ENV}, else .tools in the "
                          "repo); a no-op when they are found there or on PATH.",
                          formatter_class=HelpFormatter)
    inst.add_argument("--force", action="store_true", help="rebuild even when already available")
    inst.add_argument("--jobs", type=int, default=DEFAULT_BUILD_JOBS, help="parallel make jobs")
    inst.add_argument("--source", type=Path, help="kenlm source tarball or directory to build "
                      "(default: the kenlm sdist, fetched with pip into <tools root>/src)")
    sub.add_parser("which", help="print the path of each tool",
                   description="Print the path of each KenLM tool, or how to build it.",
                   formatter_class=HelpFormatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "install":
        if args.jobs < 1:
            parser.error("--jobs must be at least 1")
        try:
            install(force=args.force, jobs=args.jobs, source=args.source)
        except (RuntimeError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    status = 0
    for name in TOOL_NAMES:
        try:
            print(f"{name}\t{find_tool(name)}")
        except ToolNotFoundError:
            print(f"{name}\tNOT FOUND (run: {INSTALL_HINT})")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
