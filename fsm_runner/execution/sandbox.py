"""The sandbox (``security.sandbox: bwrap``): stage commands and the command repair agent under bubblewrap.

The command policy reads command text; the sandbox is the barrier behind it. Each command runs in a bwrap
of its own: the whole file system read-only except the working tree, the command's own evidence dir and a
private ``/tmp``; the runs' evidence and the contract files read-only on top of the writable tree; no
capabilities, even for root; and a PID namespace of its own whose init is killed as soon as the command's
bwrap exits (``--die-with-parent``), so nothing the command started outlives it, ``setsid`` or not.

Two things must outlive a single command. They live in the run's *namespace holder*, one bwrap process that
only waits, started when first needed and ended with the deployment:

- deployed services: deploy and teardown commands join the holder's PID namespace instead of getting one of
  their own, so a server that deploy backgrounds lives on until teardown ends the holder (its namespace goes
  with it), and teardown's commands see the pid the server wrote;
- with ``security.network: none``, the run's network namespace (loopback only): every stage command enters
  it with ``nsenter`` before bwrap starts (bwrap cannot join a network namespace itself), so the service and
  the stages that call it share one ``127.0.0.1`` that is not the host's.

The holder is spawned by a thread of its own that waits for it: bwrap's ``--die-with-parent`` follows the
thread that started it, so the holder lives exactly as long as that thread, which lives until the holder is
ended or the runner process dies (a runner killed with SIGKILL takes every sandboxed process with it).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from attrs import define, field

from fsm_runner.errors import UsageError
from fsm_runner.evidence.records import NETWORKS, SANDBOXES
from fsm_runner.execution.process import kill_group, process_start_time, run_captured

#: How to get bubblewrap, for every message that needs it.
INSTALL = "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`)"
#: What an unprivileged user needs for bwrap to create namespaces.
USERNS_HINT = (
    "as a normal user bwrap needs unprivileged user namespaces (`sysctl kernel.unprivileged_userns_clone=1` "
    "on older Debian; on Ubuntu 23.10+ an AppArmor profile that allows bwrap, or "
    "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`); in a container, one that allows namespaces "
    "(e.g. docker run --security-opt seccomp=unconfined --cap-add SYS_ADMIN)"
)
_PROBE_TIMEOUT_S = 30.0
_HOLDER_START_S = 10.0
_HOLDER_END_S = 2.0


def resolve_sandbox(contract: str, requested: str | None = None, *, recorded: str = "none") -> str:
    """The sandbox a run uses: what the contract (or, for a replay, the recorded run) asks for, tightened by
    the caller's ``requested``. A caller may tighten, never loosen: asking for ``none`` when the contract or
    the recorded run says ``bwrap`` is refused, rather than silently obeyed or silently overruled."""
    if requested is not None and requested not in SANDBOXES:
        raise UsageError(f"sandbox must be one of {', '.join(SANDBOXES)}, got {requested!r}")
    if requested == "none":
        if contract == "bwrap":
            raise UsageError(
                "pipeline.yml sets `security.sandbox: bwrap`, and a caller may tighten the sandbox, never "
                "loosen it: drop `--sandbox none` (sandbox='none'), or change security.sandbox in "
                "pipeline.yml"
            )
        if recorded == "bwrap":
            raise UsageError(
                "the run ran its commands under bwrap (run.json `sandbox`), so its replay does too: drop "
                "`--sandbox none` (sandbox='none')"
            )
    return "bwrap" if "bwrap" in (contract, recorded, requested) else "none"


# -- is bubblewrap usable here? --------------------------------------------------------------------------


def _caps() -> list[str]:
    """Root keeps every capability in a bwrap sandbox unless told otherwise (a normal user has none)."""
    return ["--cap-drop", "ALL"] if os.geteuid() == 0 else []


_probe_lock = threading.Lock()
_probed: dict[tuple[str, str | None, str, int], str | None] = {}


def sandbox_problem(network: str = "host") -> str | None:
    """Why the bwrap sandbox cannot work on this machine, or None when it can.

    bwrap is looked up on PATH; the first call per (bwrap, network, user) tries it for real, the way runs use
    it (a command of its own, and one in the run's namespace holder), and the answer is kept.
    """
    if network not in NETWORKS:
        raise UsageError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return (
            f"the sandbox (security.sandbox: bwrap) needs bubblewrap, and `bwrap` is not on PATH: {INSTALL}"
        )
    nsenter = shutil.which("nsenter") if network == "none" else None
    if network == "none" and nsenter is None:
        return (
            "`security.network: none` needs nsenter (util-linux) to enter the run's network namespace, and "
            "it is not on PATH: install util-linux"
        )
    key = (bwrap, nsenter, network, os.geteuid())
    with _probe_lock:
        if key not in _probed:
            _probed[key] = _probe(bwrap, nsenter, network)
        return _probed[key]


def _probe(bwrap: str, nsenter: str | None, network: str) -> str | None:
    plain = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    argv = [bwrap, *plain, "--unshare-pid", "--die-with-parent", *_caps(), "--", "true"]
    problem = _try(argv, ())
    if problem:
        return _cannot(problem)
    holder = None
    try:
        holder = _Holder.start(bwrap, network)
        tools = _Tools(bwrap, nsenter)
        for service in (False, True):
            probe = _command_argv(tools, holder, plain, ["true"], Path("/"), service=service, network=network)
            problem = _try(probe, holder.fds)
            if problem:
                break
    except _HolderFailed as exc:
        problem = str(exc)
    finally:
        if holder is not None:
            holder.end()
    if problem and network == "none" and os.geteuid() != 0:
        return (
            f"bwrap works here, but `security.network: none` does not for a normal user ({problem}): "
            "entering the run's network namespace from a user namespace is refused; run as root, or use "
            "`network: host`"
        )
    return _cannot(problem) if problem else None


def _try(argv: list[str], fds: Sequence[int]) -> str | None:
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            pass_fds=tuple(fds),
            start_new_session=True,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def _cannot(problem: str) -> str:
    who = "as root" if os.geteuid() == 0 else f"as uid {os.geteuid()}"
    return (
        f"bwrap cannot create the sandbox's namespaces on this machine ({who}: {problem}); {USERNS_HINT}; "
        "or run without the sandbox (security.sandbox: none, and no --sandbox bwrap)"
    )


def require_sandbox(network: str = "host") -> None:
    """Raise :class:`UsageError` with what to install or change when the sandbox cannot work here."""
    problem = sandbox_problem(network)
    if problem:
        raise UsageError(problem)


def bwrap_version() -> str | None:
    """``bubblewrap 0.8.0``, or None when bwrap is not on PATH (for reports and benchmarks)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    try:
        done = run_captured([bwrap, "--version"], timeout=10)
    except OSError:
        return None
    return done.stdout.decode("utf-8", "replace").strip() or None


# -- the run's namespace holder ---------------------------------------------------------------------------


class _HolderFailed(Exception):
    pass


@define(frozen=True)
class _Tools:
    bwrap: str
    nsenter: str | None


class _Holder:
    """One bwrap process that holds a PID namespace (and a network namespace with ``network: none``) open.

    Its namespaces are kept as file descriptors: commands join them by descriptor, so a recycled pid can never
    send a command into a stranger's namespace.
    """

    def __init__(self, proc: subprocess.Popen[bytes], lifeline: int, fds: dict[str, int]) -> None:
        self.proc = proc
        self.lifeline = lifeline
        self.ns = fds
        self.init: int | None = None  # the namespace's init, once known
        self.init_start: int | None = None

    @property
    def fds(self) -> tuple[int, ...]:
        return tuple(self.ns.values())

    @classmethod
    def start(cls, bwrap: str, network: str) -> _Holder:
        argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid"]
        if network == "none":
            argv.append("--unshare-net")  # bwrap brings the new namespace's loopback up
        life_r, life_w = os.pipe()
        info_r, info_w = os.pipe()
        argv += ["--die-with-parent", *_caps(), "--info-fd", str(info_w), "--", "cat"]
        started: list[subprocess.Popen[bytes] | OSError] = []
        ready = threading.Event()

        def hold() -> None:
            # --die-with-parent follows this thread: it waits as long as the holder lives.
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=life_r,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    pass_fds=(info_w,),
                    start_new_session=True,
                )
            except OSError as exc:
                started.append(exc)
                ready.set()
                return
            started.append(proc)
            ready.set()
            proc.wait()

        threading.Thread(target=hold, name="fsm-runner-sandbox-holder", daemon=True).start()
        ready.wait()
        os.close(life_r)
        os.close(info_w)
        try:
            info = _read_all(info_r, _HOLDER_START_S)
        finally:
            os.close(info_r)
        outcome = started[0]
        if isinstance(outcome, OSError):
            os.close(life_w)
            raise _HolderFailed(f"cannot start bwrap: {outcome.strerror or outcome}")
        holder = cls(outcome, life_w, {})  # from here on, end() owns the lifeline
        try:
            holder._attach(info, network)
        except BaseException:
            holder.end()
            raise
        return holder

    def _attach(self, info: bytes, network: str) -> None:
        try:
            child = int(json.loads(info)["child-pid"])
        except (ValueError, KeyError, TypeError):
            try:
                self.proc.wait(timeout=_HOLDER_START_S)
            except subprocess.TimeoutExpired:
                raise _HolderFailed(f"bwrap did not report within {_HOLDER_START_S:g}s") from None
            err = self.proc.stderr.read().decode("utf-8", "replace").strip() if self.proc.stderr else ""
            raise _HolderFailed(err.splitlines()[-1] if err else "bwrap exited before it reported") from None
        kinds = ["pid", *(["net"] if network == "none" else []), *(["user"] if os.geteuid() != 0 else [])]
        for kind in kinds:
            try:
                self.ns[kind] = os.open(f"/proc/{child}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise _HolderFailed(f"cannot open the {kind} namespace of the holder: {exc}") from None
        self.init, self.init_start = child, process_start_time(child)
        if _parent_of(child) != self.proc.pid:  # gone and recycled between the report and the open
            raise _HolderFailed("the namespace holder exited while it started")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def end(self) -> None:
        """End the holder, and with it every process in its namespaces."""
        if self.lifeline >= 0:
            os.close(self.lifeline)  # cat reads EOF, bwrap exits and its init is killed
            self.lifeline = -1
        try:
            self.proc.wait(timeout=_HOLDER_END_S)
        except subprocess.TimeoutExpired:
            kill_group(self.proc.pid, grace=0.5)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=_HOLDER_END_S)
        # The init is killed when bwrap exits, and it finishes exiting only once every process of its
        # namespace is gone: waiting for it means the services are gone when this returns.
        if self.init is not None:
            _wait_exited(self.init, self.init_start, _HOLDER_END_S)
        for fd in self.ns.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.ns = {}


def _read_all(fd: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return data
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk


def _wait_exited(pid: int, start: int | None, timeout: float) -> None:
    """Wait until ``pid`` (the process that started at ``start``) has exited: a zombie or gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            return
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X") or (start is not None and int(fields[19]) != start):
            return
        time.sleep(0.005)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


def _command_argv(
    tools: _Tools,
    holder: _Holder | None,
    mounts: Sequence[str],
    argv: Sequence[str],
    cwd: Path,
    *,
    service: bool,
    network: str,
) -> list[str]:
    """bwrap around ``argv`` (and nsenter in front of it with ``network: none``)."""
    inner = [tools.bwrap, *mounts, "--chdir", str(cwd), "--die-with-parent", *_caps()]
    if service:
        assert holder is not None
        if "user" in holder.ns:  # an unprivileged holder: its PID namespace belongs to its user namespace
            inner += ["--userns", str(holder.ns["user"])]
        inner += ["--pidns", str(holder.ns["pid"])]
    else:
        inner.append("--unshare-pid")
    inner += ["--", *argv]
    if network != "none":
        return inner
    assert holder is not None and tools.nsenter is not None
    enter = [tools.nsenter]
    if "user" in holder.ns:
        enter += [f"--user=/proc/self/fd/{holder.ns['user']}", "--preserve-credentials"]
    return [*enter, f"--net=/proc/self/fd/{holder.ns['net']}", "--", *inner]


# -- what runs use ---------------------------------------------------------------------------------------


def _paths(items: Iterable[Path | str]) -> tuple[Path, ...]:
    return tuple(Path(p) for p in items)


def _resolved(paths: Iterable[Path]) -> list[Path]:
    """Real paths (bwrap binds what a symlink points to), each once, in order."""
    return list(dict.fromkeys(Path(p).resolve() for p in paths))


def _pinned(protected: Sequence[Path], writable: Sequence[Path]) -> list[Path]:
    """The directories between a writable root and a protected path in it, each bound onto itself.

    Only the protected paths themselves are mounts; a directory above one (``.aider_fsm`` above
    ``bootstrap.yml``, the runs above the run dir) could be renamed away and replaced by a writable copy.
    A mount point cannot be renamed (EBUSY), so each of them is made one.
    """
    found: dict[Path, None] = {}
    for path in protected:
        for root in writable:
            if path != root and path.is_relative_to(root):
                for parent in reversed(path.parents):
                    if parent != root and parent.is_relative_to(root) and parent.is_dir():
                        found[parent] = None
    return list(found)


@define(frozen=True)
class Wrapped:
    """A command line ready to spawn, and the descriptors it needs (the namespaces it joins)."""

    argv: tuple[str, ...]
    pass_fds: tuple[int, ...] = ()


class CommandSandbox(Protocol):
    """What runs a command line in a sandbox: a :class:`Sandbox`, or its :meth:`Sandbox.services` view."""

    def wrap(self, argv: Sequence[str], cwd: Path, *, evidence: Path | None = None) -> Wrapped: ...


class SandboxStartError(OSError):
    """The run's namespace holder could not be started: the command that needed it cannot start either."""


def _tools() -> _Tools:
    return _Tools(shutil.which("bwrap") or "bwrap", shutil.which("nsenter"))


@define
class Sandbox:
    """The sandbox of one run: wraps its command lines, and owns its namespace holder.

    ``writable``: the working tree (and whatever else commands may change); ``sealed``: directories inside
    those that are read-only again (the runs' evidence in the tree), except the one evidence directory of
    the command being wrapped; ``read_only``: files inside them that commands may read but never change (the
    contract files; a missing one is skipped). bwrap and nsenter are looked up on PATH once, when the sandbox
    is made (setup has checked that they work).
    """

    network: str = field(default="host")
    writable: tuple[Path, ...] = field(factory=tuple, converter=_paths)
    read_only: tuple[Path, ...] = field(factory=tuple, converter=_paths)
    sealed: tuple[Path, ...] = field(factory=tuple, converter=_paths)
    _tools: _Tools = field(factory=_tools, init=False)
    _holder: _Holder | None = field(default=None, init=False)
    _lock: threading.Lock = field(factory=threading.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise UsageError(f"network must be one of {', '.join(NETWORKS)}, got {self.network!r}")

    def mounts(self, *, evidence: Path | None = None, also_read: Sequence[Path] = ()) -> list[str]:
        """The file system a command sees, in order (a later mount covers an earlier one): ``/`` read-only,
        a private /tmp, the writable paths, the sealed ones read-only again, the command's ``evidence`` dir
        writable, then the read-only files and ``also_read`` (an agent program kept under the host's /tmp)."""
        args = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        writable = _resolved(self.writable)
        for path in writable:
            args += ["--bind", str(path), str(path)]
        protected = [*self.sealed, *self.read_only, *([evidence] if evidence is not None else [])]
        for path in _pinned(_resolved(protected), writable):
            args += ["--bind", str(path), str(path)]
        for path in _resolved(self.sealed):
            if path.is_dir():
                args += ["--ro-bind", str(path), str(path)]
        if evidence is not None:
            path = Path(evidence).resolve()
            args += ["--bind", str(path), str(path)]
        for path in _resolved((*self.read_only, *also_read)):
            if path.exists():
                args += ["--ro-bind", str(path), str(path)]
        return args

    def wrap(
        self,
        argv: Sequence[str],
        cwd: Path,
        *,
        evidence: Path | None = None,
        service: bool = False,
        network: str | None = None,
        also_read: Sequence[Path] = (),
    ) -> Wrapped:
        """``argv`` as it runs in the sandbox, in ``cwd``, writing its evidence to ``evidence``.

        ``service``: the command joins the run's service namespace (deploy and teardown), so what it leaves
        running lives until :meth:`end_services`. ``network`` overrides the run's (the repair agent keeps the
        host's network to reach its model). ``also_read``: see :meth:`mounts`. Raises
        :class:`SandboxStartError` (an :class:`OSError`) when the namespace holder cannot be started.
        """
        net = self.network if network is None else network
        if net not in NETWORKS:
            raise UsageError(f"network must be one of {', '.join(NETWORKS)}, got {net!r}")
        holder = self._live_holder() if service or net == "none" else None
        mounts = self.mounts(evidence=evidence, also_read=also_read)
        full = _command_argv(self._tools, holder, mounts, argv, Path(cwd), service=service, network=net)
        return Wrapped(tuple(full), holder.fds if holder is not None else ())

    def _live_holder(self) -> _Holder:
        with self._lock:
            if self._holder is not None and not self._holder.alive():
                self._holder.end()
                self._holder = None
            if self._holder is None:
                try:
                    self._holder = _Holder.start(self._tools.bwrap, self.network)
                except _HolderFailed as exc:
                    raise SandboxStartError(f"the sandbox's namespace holder did not start: {exc}") from None
            return self._holder

    def services(self) -> _Services:
        """This sandbox as deploy and teardown commands use it: in the services' namespace."""
        return _Services(self)

    def end_services(self) -> bool:
        """End the namespace holder and everything in it (the deployed services); True when one was running.
        The next command that needs it starts a new one."""
        with self._lock:
            holder, self._holder = self._holder, None
        if holder is None:
            return False
        running = holder.alive()
        holder.end()
        return running

    def close(self) -> None:
        self.end_services()


@define(frozen=True)
class _Services:
    sandbox: Sandbox

    def wrap(self, argv: Sequence[str], cwd: Path, *, evidence: Path | None = None) -> Wrapped:
        return self.sandbox.wrap(argv, cwd, evidence=evidence, service=True)
