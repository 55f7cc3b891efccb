"""Running nftables scripts: in this process through libnftables, else a forked ``nft``.

``nft`` is a thin front end to libnftables (its library, shipped with it as
libnftables1 on Debian 12 and 13): the same parser, the same one transaction per
script, the same messages. Calling the library from here saves every session a fork
and exec of ``nft`` and of Python's ``subprocess`` module before its announcement
(docs/performance.md, issue 26). The five C functions needed are declared here with
ctypes, which the standard library ships; upstream's own Python binding is the same
declarations, but it is not on PyPI, so the venv could not get it.

The library is loaded from fixed places only (never a search path an environment
could influence), as ``nft`` is run from fixed places only. Where it cannot be loaded
(another layout, an older system), the ``nft`` program is forked as before: slower,
never different.
"""

from __future__ import annotations

import os
import sys

_NFT_PATHS = ("/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft")
_LIBRARY = "libnftables.so.1"
_LIBRARY_DIRS = (
    f"/usr/lib/{getattr(sys.implementation, '_multiarch', '')}",
    f"/lib/{getattr(sys.implementation, '_multiarch', '')}",
    "/usr/lib64",
    "/usr/lib",
)
_TIMEOUT = 10.0
_OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON


def nft_path() -> str:
    """nft from fixed places only (never a PATH that a client could influence)."""
    for path in _NFT_PATHS:
        if os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(2, "nft (nftables) is not installed: needed for source filtering")


class _Library:
    """One libnftables context for this process, made at first use."""

    def __init__(self, path: str) -> None:
        import ctypes

        lib = ctypes.CDLL(path, use_errno=True)
        ptr, text = ctypes.c_void_p, ctypes.c_char_p
        lib.nft_ctx_new.restype, lib.nft_ctx_new.argtypes = ptr, [ctypes.c_uint]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ptr]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_output_get_flags.argtypes = [ptr]
        lib.nft_ctx_output_set_flags.argtypes = [ptr, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ptr, text]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).restype, getattr(lib, name).argtypes = text, [ptr]
        self.lib, self.ctx = lib, lib.nft_ctx_new(0)  # 0: NFT_CTX_DEFAULT
        if not self.ctx:
            raise OSError(12, "libnftables: no context")
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)
        self.flags = lib.nft_ctx_output_get_flags(self.ctx)

    def run(self, script: str, json: bool) -> tuple[int, str, str]:
        lib, ctx = self.lib, self.ctx
        lib.nft_ctx_output_set_flags(ctx, self.flags | (_OUTPUT_JSON if json else 0))
        status = lib.nft_run_cmd_from_buffer(ctx, script.encode())
        out = lib.nft_ctx_get_output_buffer(ctx) or b""  # each read empties its buffer
        err = lib.nft_ctx_get_error_buffer(ctx) or b""
        return status, out.decode(errors="replace"), err.decode(errors="replace")


_library: _Library | None = None
_unavailable = False


def _loaded() -> _Library | None:
    global _library, _unavailable
    if _library is None and not _unavailable:
        for directory in _LIBRARY_DIRS:
            path = os.path.join(directory, _LIBRARY)
            if os.path.exists(path):
                try:
                    _library = _Library(path)
                    break
                except (OSError, AttributeError):  # not loadable, or too old
                    continue
        _unavailable = _library is None
    return _library


def in_process() -> bool:
    """Whether scripts run through libnftables here (else through a forked ``nft``)."""
    return _loaded() is not None


def run(script: str) -> None:
    """Run ``script`` as one transaction; OSError with nft's own first error line if refused."""
    _checked(*_ran(script, json=False))


def query(command: str) -> str:
    """The JSON output of one listing command, e.g. ``list table netdev tunhelper``."""
    return _checked(*_ran(command, json=True))


def _ran(script: str, json: bool) -> tuple[int, str, str]:
    library = _loaded()
    return _forked(script, json) if library is None else library.run(script, json)


def _checked(status: int, out: str, err: str) -> str:
    if status != 0:
        # from "Error" on: the forked nft puts its input's name and position before it
        why = next((x[x.index("Error") :] for x in err.splitlines() if "Error" in x), "failed")
        if "No such file or directory" in why:
            raise FileNotFoundError(2, f"nft: {why.strip()}")  # a table, chain or set not there
        raise OSError(22, f"nft: {why.strip()}")
    return out


def _forked(script: str, json: bool) -> tuple[int, str, str]:
    import subprocess

    # nft -j -f prints nothing for a listing (1.0.6): a query goes as words on argv
    argv = [nft_path(), "-j", *script.split()] if json else [nft_path(), "-f", "-"]
    try:
        result = subprocess.run(
            argv, input="" if json else script, capture_output=True, text=True, timeout=_TIMEOUT
        )
    except subprocess.TimeoutExpired as e:
        raise TimeoutError(62, "nft did not answer") from e
    return result.returncode, result.stdout, result.stderr
