#!/usr/bin/python3
"""A reference hypervisor agent for migmoverd, in Python: a data-fd migration with PRE_COPY.

This script plays everything around two migmoverd daemons on one machine: the hypervisor agents
of both hosts (gRPC clients of each daemon) and their VMMs (which, in data-fd mode, run the VFIO
migration FSM themselves and hand the daemons only the migration *data* fds). It follows
api/FD_INTAKE.md, "Data-fd mode with PRE_COPY", step by step:

  1. Both hosts: pass the data fds over each daemon's fd intake socket (SCM_RIGHTS), a
     `save-data` fd on the source and a `resume-data` fd on the destination, read the
     `ok <handle>` reply, and AttachDevice{fd_handle} each.
  2. Destination: PrepareDestination (its reply carries the generated session secret).
     Source: StartSource with precopy=true and that secret.
  3. PRE_COPY: the "VMM" writes part of each device's state into the source's fd, in pieces with
     pauses (an empty fd means "no data now" to the daemon, never the end), while the agent
     watches the source session (WatchSession) until every byte was sent as PRE_COPY data and
     `switchover_ready` is true.
  4. The agent "stops the vCPUs" and calls Switchover; then the VMM writes the STOP_COPY
     remainder and closes its end (end-of-file after Switchover completes the stream).
  5. The destination writes the stream into its resume-data fd and closes it once the stream is
     complete and checked; the VMM "loads" it, and runs the device only once the destination
     session is SUCCEEDED.
  6. The agent waits for both sessions to end SUCCEEDED and checks that the bytes that came out
     of each destination fd are exactly those that went into the source fd (length and SHA-256).

In a real VMM the save-data fd is the device's migration data fd (VFIO_DEVICE_FEATURE_MIGRATION
arcs to PRE_COPY / STOP_COPY open it), and the resume-data fd is the one the RESUMING arc opens;
here each is one end of a pipe (or, with --channel=socketpair, of a unix socket pair) whose other
end this script holds, with pseudo-random bytes standing for the device state.

Needs only Debian packages: python3-grpcio, python3-protobuf, and protoc with grpc_python_plugin
(protobuf-compiler, protobuf-compiler-grpc), which generate the gRPC stubs from
api/migmover.proto into a temporary directory at start-up (nothing is written into the source
tree). Run it with Debian's interpreter, /usr/bin/python3. See deploy/examples/README.md.

Exit status: 0 only when both sessions SUCCEEDED and every byte arrived intact; 1 when the
migration or a call failed (the message names the RPC and its gRPC code); 2 for bad usage or a
missing prerequisite.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import random
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

try:
    import grpc
except ImportError:  # Reported in main(), with what to install.
    grpc = None

# Filled in by load_stubs(): the modules protoc generates from api/migmover.proto.
pb = None  # migmover_pb2: the messages
pb_grpc = None  # migmover_pb2_grpc: the Migmover stub

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class AgentError(Exception):
    """A failure the agent reports in one line and exits 1 for."""


class UsageError(Exception):
    """A bad flag or a missing prerequisite: exit 2."""


def log(msg: str) -> None:
    print(f"agent: {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# gRPC stubs, generated at start-up from the .proto (never checked in).
# --------------------------------------------------------------------------------------------

def load_stubs(proto: Path, protoc: str, plugin: str) -> None:
    """Generates migmover_pb2(.py) and migmover_pb2_grpc(.py) into a temporary directory with
    protoc and grpc_python_plugin, and imports them. The directory is removed at once: the
    imported modules live on in memory."""
    global pb, pb_grpc
    if not proto.is_file():
        raise UsageError(f"no such .proto file: {proto} (set --proto)")
    for tool, flag in ((protoc, "--protoc"), (plugin, "--grpc_python_plugin")):
        if not (os.path.isfile(tool) and os.access(tool, os.X_OK)):
            raise UsageError(
                f"{tool} is not an executable ({flag}); Debian ships protoc in protobuf-compiler "
                "and grpc_python_plugin in protobuf-compiler-grpc")
    with tempfile.TemporaryDirectory(prefix="migmover-stubs.") as out:
        cmd = [protoc, f"--proto_path={proto.parent}", f"--python_out={out}",
               f"--grpc_python_out={out}", f"--plugin=protoc-gen-grpc_python={plugin}",
               str(proto)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise UsageError(f"protoc failed (exit {run.returncode}): {run.stderr.strip()}")
        sys.path.insert(0, out)
        sys.dont_write_bytecode = True  # No __pycache__ in the temporary directory either.
        try:
            pb = importlib.import_module(proto.stem + "_pb2")
            pb_grpc = importlib.import_module(proto.stem + "_pb2_grpc")
        finally:
            sys.path.remove(out)


# --------------------------------------------------------------------------------------------
# The fd intake socket (api/FD_INTAKE.md).
# --------------------------------------------------------------------------------------------

class IntakeError(AgentError):
    def __init__(self, path: str, purpose: str, code: str, message: str):
        super().__init__(f"fd intake {path} refused a {purpose} fd: {code}: {message}")
        self.code = code


class FdIntake:
    """One connection to a daemon's --fd_socket. It may carry any number of exchanges, one at a
    time: each request is `<purpose>\\n` in one sendmsg with exactly one fd as SCM_RIGHTS, and
    its one-line reply is read before the next request is sent. The daemon drops a connection
    idle for 5 s, so open it when the fds are at hand and close it after."""

    def __init__(self, path: str, timeout_s: float = 10.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout_s)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise AgentError(f"cannot connect to the fd intake socket {path}: {e.strerror}")

    def __enter__(self) -> "FdIntake":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def send(self, purpose: str, fd: int) -> int:
        """Passes `fd` (the daemon gets its own duplicate; ours stays open) and returns the
        handle for AttachDevice{fd_handle}."""
        request = f"{purpose}\n".encode()
        assert len(request) <= 64
        try:
            socket.send_fds(self.sock, [request], [fd])
        except (BrokenPipeError, ConnectionResetError):
            # A daemon that refuses the connection (our peer credentials) writes its reason
            # before it closes: that line, not the broken pipe, is the answer. Read on.
            pass
        reply = self._read_line()
        # `ok <handle>` or `error <CODE> <message>` (CODE: a canonical gRPC code name).
        if m := re.fullmatch(r"ok (\d+)", reply):
            return int(m.group(1))
        if m := re.fullmatch(r"error ([A-Z_]+) (.*)", reply, re.DOTALL):
            raise IntakeError(self.path, purpose, m.group(1), m.group(2))
        raise AgentError(f"fd intake {self.path}: unexpected reply {reply!r}")

    def _read_line(self) -> str:
        buf = b""
        while not buf.endswith(b"\n"):
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                raise AgentError(f"fd intake {self.path}: no reply within the timeout")
            if not chunk:
                raise AgentError(f"fd intake {self.path}: connection closed without a reply "
                                 f"(got {buf!r})")
            buf += chunk
            if len(buf) > 4096:
                raise AgentError(f"fd intake {self.path}: reply too long")
        return buf[:-1].decode(errors="replace")


# --------------------------------------------------------------------------------------------
# gRPC calls, with failures named by RPC and code.
# --------------------------------------------------------------------------------------------

class Daemon:
    """One daemon's gRPC stub (over its unix socket) and fd intake path."""

    def __init__(self, role: str, grpc_socket: str, fd_socket: str, rpc_timeout_s: float,
                 connect_timeout_s: float):
        self.role, self.fd_socket, self.rpc_timeout_s = role, fd_socket, rpc_timeout_s
        self.channel = grpc.insecure_channel(f"unix:{grpc_socket}")
        try:
            grpc.channel_ready_future(self.channel).result(timeout=connect_timeout_s)
        except grpc.FutureTimeoutError:
            raise AgentError(f"{role} daemon: its gRPC socket {grpc_socket} did not answer "
                             f"within {connect_timeout_s:g} s (is migmoverd running?)")
        self.stub = pb_grpc.MigmoverStub(self.channel)

    def call(self, rpc: str, request):
        """A unary call with a deadline; any failure becomes an AgentError naming the RPC, the
        daemon and the gRPC status code."""
        try:
            return getattr(self.stub, rpc)(request, timeout=self.rpc_timeout_s)
        except grpc.RpcError as e:
            raise AgentError(f"{rpc} on the {self.role} daemon failed: {e.code().name}: "
                             f"{e.details()}") from None

    def close(self) -> None:
        self.channel.close()


PHASE = None  # pb.SessionStatus.Phase, once the stubs are loaded


def phase_name(status) -> str:
    return pb.SessionStatus.Phase.Name(status.phase)


def is_final(status) -> bool:
    return status.phase in (PHASE.SUCCEEDED, PHASE.FAILED, PHASE.CANCELLED, PHASE.IN_DOUBT)


def describe_failure(status) -> str:
    """A session's phase and error, its google.rpc.Code by name (the numbers gRPC uses)."""
    codes = {c.value[0]: c.name for c in grpc.StatusCode}
    code = codes.get(status.error_code, str(status.error_code))
    return f"{phase_name(status)} ({code}: {status.error or 'no error given'})"


class SessionWatcher:
    """Follows one session with WatchSession in a thread (the daemon sends the status at once,
    then on every change, and ends the stream after a final phase); wait_for() blocks until a
    condition on the latest status holds."""

    def __init__(self, daemon: Daemon, session_id: str):
        self.daemon, self.session_id = daemon, session_id
        self.cond = threading.Condition()
        self.latest = None
        self.ended = False
        self.error: str | None = None
        self.ready_first = None  # the first status with switchover_ready true
        self.call = daemon.stub.WatchSession(pb.WatchSessionRequest(session_id=session_id))
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"watch-{daemon.role}")
        self.thread.start()

    def _run(self) -> None:
        try:
            for status in self.call:
                with self.cond:
                    self.latest = status
                    if status.switchover_ready and self.ready_first is None:
                        self.ready_first = status
                    self.cond.notify_all()
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:  # CANCELLED: our own stop()
                with self.cond:
                    self.error = (f"WatchSession on the {self.daemon.role} daemon failed: "
                                  f"{e.code().name}: {e.details()}")
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def wait_for(self, what: str, until: Callable[[object], bool], timeout_s: float):
        """Returns the first status for which until() holds. Raises when the session ends
        (a final phase that is not what we wait for), the watch fails or time runs out."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                if self.latest is not None and until(self.latest):
                    return self.latest
                if self.latest is not None and is_final(self.latest):
                    raise AgentError(f"{self.daemon.role} session {self.session_id} ended "
                                     f"{describe_failure(self.latest)} while waiting for {what}")
                if self.error:
                    raise AgentError(self.error)
                if self.ended:
                    raise AgentError(f"WatchSession on the {self.daemon.role} daemon ended "
                                     f"before {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AgentError(f"timed out after {timeout_s:g} s waiting for {what} on the "
                                     f"{self.daemon.role} session (last status: "
                                     f"{phase_name(self.latest) if self.latest else 'none'})")
                self.cond.wait(left)

    def stop(self) -> None:
        self.call.cancel()


# --------------------------------------------------------------------------------------------
# The VMM's side of each device: the data it "saves" and what it "loads".
# --------------------------------------------------------------------------------------------

@dataclass
class DeviceState:
    """One device as the two VMMs see it."""
    name: str
    data: bytes  # The device state the source VMM streams out (pseudo-random here).
    precopy_len: int  # How much of it is PRE_COPY data; the rest is STOP_COPY data.
    save_writer: int = -1  # Source VMM: write end; the daemon reads the other (save-data).
    resume_reader: int = -1  # Destination VMM: read end; the daemon writes the other.
    received: int = 0
    digest: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    reader: threading.Thread | None = None
    read_error: str | None = None

    def close(self) -> None:
        for fd in (self.save_writer, self.resume_reader):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.save_writer = self.resume_reader = -1


def make_channel(kind: str) -> tuple[int, int]:
    """(read end, write end) of a stream: a pipe, or a unix socket pair. Both ends blocking."""
    if kind == "pipe":
        return os.pipe2(os.O_CLOEXEC)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    return a.detach(), b.detach()  # a reads, b writes (either could)


class WriterClosed(Exception):
    """The daemon closed its end of a save-data stream: its session ended."""


def write_all(fd: int, data: memoryview, timeout_s: float) -> None:
    """Writes all of `data` into a nonblocking fd, waiting for room at most timeout_s at a time
    (a daemon that stops reading is an error, not a hang)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while data:
        try:
            data = data[os.write(fd, data):]
            continue
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            raise WriterClosed()
        if not poller.poll(timeout_s * 1000):
            raise AgentError(f"the source daemon read nothing for {timeout_s:g} s")


def end_of_stream(fd: int, kind: str) -> bool:
    """The source VMM ends its stream: a pipe's writer closes it (returns True: fd closed); a
    socket's writer shuts down its sending direction (the daemon sees readable-with-nothing-to-
    read, no hang-up) and may keep the socket until the session ends."""
    if kind == "pipe":
        os.close(fd)
        return True
    s = socket.socket(fileno=fd)
    try:
        s.shutdown(socket.SHUT_WR)
    finally:
        s.detach()  # The fd stays ours, open.
    return False


def drain_resume_fd(dev: DeviceState) -> None:
    """The destination VMM: reads what the daemon writes into the resume-data fd until the
    daemon closes it (the stream complete and checked). A real VMM writes these bytes into the
    device's resume data fd, then moves the device RESUMING -> STOP."""
    try:
        while chunk := os.read(dev.resume_reader, 1 << 16):
            dev.digest.update(chunk)
            dev.received += len(chunk)
    except OSError as e:
        dev.read_error = f"reading {dev.name}'s resume-data stream: {e.strerror}"


# --------------------------------------------------------------------------------------------
# The migration.
# --------------------------------------------------------------------------------------------

SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
              "g": 1 << 30, "gib": 1 << 30}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4MiB, 512KiB, 1048576)")
    return int(m.group(1)) * SIZE_UNITS[m.group(2).lower()]


def mib(n: float) -> str:
    return f"{n / (1 << 20):.2f} MiB"


def per_second(bytes_per_second: float) -> str:
    return f"{bytes_per_second / (1 << 20):.1f} MiB/s"


def rate(n: float, seconds: float) -> str:
    return per_second(n / seconds) if seconds > 0 else "-"


def run(args: argparse.Namespace) -> None:
    src = Daemon("source", args.src_socket, args.src_fd_socket, args.rpc_timeout_s,
                 args.connect_timeout_s)
    dst = Daemon("destination", args.dst_socket, args.dst_fd_socket, args.rpc_timeout_s,
                 args.connect_timeout_s)
    peer = args.peer
    if not peer:
        # The destination says where it takes peer streams (as bound: a wildcard address is
        # no use to the source; then pass --peer).
        peer = dst.call("GetDaemonInfo", pb.GetDaemonInfoRequest()).peer_address
    sid = args.session_id or f"py-agent-{os.getpid()}-{int(time.time())}"
    rng = random.Random(args.seed)
    devices: list[DeviceState] = []
    for i in range(args.devices):
        data = rng.randbytes(args.size)
        devices.append(DeviceState(name=f"{sid}.dev{i}", data=data,
                                   precopy_len=int(len(data) * args.precopy_fraction)))
    names = [d.name for d in devices]
    total = sum(len(d.data) for d in devices)
    log(f"session {sid}: {len(devices)} device(s) of {mib(args.size)} each over "
        f"{args.channel}s, peer {peer}")

    watchers: list[SessionWatcher] = []
    prepared = started = switched = ended = False
    try:
        # ---- 1. Pass the data fds and attach them, on both hosts.
        with FdIntake(src.fd_socket) as src_intake, FdIntake(dst.fd_socket) as dst_intake:
            for dev in devices:
                # Source: the daemon reads the device's state stream from a save-data fd.
                daemon_end, dev.save_writer = make_channel(args.channel)
                os.set_blocking(dev.save_writer, False)  # write_all() waits with a timeout
                try:
                    src_handle = src_intake.send("save-data", daemon_end)
                finally:
                    os.close(daemon_end)  # The daemon holds its own copy now.
                # Destination: the daemon writes the stream into a resume-data fd.
                dev.resume_reader, daemon_end = make_channel(args.channel)
                try:
                    dst_handle = dst_intake.send("resume-data", daemon_end)
                finally:
                    os.close(daemon_end)  # Only the daemon's copy is left: its close is EOF.
                log(f"{dev.name}: fd intake handles: source save-data {src_handle}, "
                    f"destination resume-data {dst_handle}")
                # A handle is good for one AttachDevice, within --fd_handle_ttl_s.
                src.call("AttachDevice", pb.AttachDeviceRequest(name=dev.name,
                                                                fd_handle=src_handle))
                dst.call("AttachDevice", pb.AttachDeviceRequest(name=dev.name,
                                                                fd_handle=dst_handle))
        log(f"attached {len(devices)} device(s) on both daemons")

        # The destination VMM is ready to take each stream as soon as it flows.
        for dev in devices:
            dev.reader = threading.Thread(target=drain_resume_fd, args=(dev,), daemon=True,
                                          name=f"resume-{dev.name}")
            dev.reader.start()

        # ---- 2. PrepareDestination, then StartSource with the session secret.
        options = pb.TransferOptions(data_path=args.data_path,
                                     idle_timeout_ms=args.idle_timeout_ms)
        # An empty token asks the destination to generate the session's secret (32 random
        # bytes) and return it; the agent hands it to the source side (it never crosses the
        # network between the daemons). A fresh secret for every session.
        prep = dst.call("PrepareDestination", pb.PrepareDestinationRequest(
            session_id=sid, devices=names, options=options))
        prepared = True
        log(f"PrepareDestination: destination session {phase_name(prep)}, "
            f"{len(prep.token)}-byte secret generated")
        # The device is in PRE_COPY (in a real VMM: the arc RUNNING -> PRE_COPY) before
        # StartSource with precopy=true: from now on the daemon frames what it reads as
        # PRE_COPY data.
        start = src.call("StartSource", pb.StartSourceRequest(
            session_id=sid, devices=names, peer=peer, token=prep.token, precopy=True,
            options=options))
        started = True
        log(f"StartSource: source session {phase_name(start)}")
        src_watch = SessionWatcher(src, sid)
        dst_watch = SessionWatcher(dst, sid)
        watchers += [src_watch, dst_watch]

        def vmm_write(dev: DeviceState, data: memoryview) -> None:
            try:
                write_all(dev.save_writer, data, args.timeout_s)
            except WriterClosed:
                # The daemon closes the data fd when the session ends, whatever the outcome:
                # report why it ended.
                st = src.call("GetSession", pb.GetSessionRequest(session_id=sid))
                raise AgentError(f"{dev.name}: the source daemon closed its save-data fd; the "
                                 f"source session is {describe_failure(st)}") from None

        # ---- 3. PRE_COPY: the VM runs; the VMM streams device state in pieces, with pauses.
        t_pre = time.monotonic()
        for piece in range(args.pieces):
            for dev in devices:
                lo = dev.precopy_len * piece // args.pieces
                hi = dev.precopy_len * (piece + 1) // args.pieces
                vmm_write(dev, memoryview(dev.data)[lo:hi])
            if piece + 1 < args.pieces and args.pause_ms > 0:
                # Nothing to read meanwhile: the daemon takes an empty fd as "no data now"
                # (never as the end) and keeps the session alive, however long this lasts.
                time.sleep(args.pause_ms / 1000)
        precopy_total = sum(d.precopy_len for d in devices)
        log(f"PRE_COPY: wrote {mib(precopy_total)} in {args.pieces} piece(s), "
            f"{args.pause_ms} ms pause between pieces")
        # Wait until the daemon read (and sent) all of it as PRE_COPY data and says a
        # switchover now would fit the downtime limit.
        status = src_watch.wait_for(
            "all PRE_COPY data sent and switchover_ready",
            lambda s: s.precopy_bytes >= precopy_total and s.switchover_ready,
            args.timeout_s)
        pre_s = time.monotonic() - t_pre
        log(f"switchover ready: precopy_bytes={status.precopy_bytes} "
            f"(rounds {status.precopy_rounds}, expected downtime "
            f"{status.expected_downtime_seconds * 1000:.1f} ms of "
            f"{status.downtime_limit_seconds * 1000:.0f} ms) after {pre_s:.2f} s; "
            f"switchover_ready first true at precopy_bytes="
            f"{src_watch.ready_first.precopy_bytes} (a data-fd device counts as ready: the "
            f"daemon cannot ask the agent's driver for its initial bytes)")

        # ---- 4. Stop the vCPUs, device to STOP_COPY (a real VMM: the arc PRE_COPY ->
        # STOP_COPY), Switchover; only then the rest of the state and the end of the stream.
        # An end-of-file before Switchover is a VMM that gave up: it fails the session.
        t_stop = time.monotonic()
        sw = src.call("Switchover", pb.SwitchoverRequest(session_id=sid))
        switched = True
        log(f"Switchover: source session {phase_name(sw)}")
        for dev in devices:
            vmm_write(dev, memoryview(dev.data)[dev.precopy_len:])
            if end_of_stream(dev.save_writer, args.channel):
                dev.save_writer = -1
        stop_total = total - precopy_total
        log(f"STOP_COPY: wrote the remaining {mib(stop_total)} and ended each stream")

        # ---- 5./6. Both sessions to their end. The source decides the outcome: it reports
        # SUCCEEDED only after every destination device committed (RESUMING -> STOP).
        src_end = src_watch.wait_for("the end of the session", is_final, args.timeout_s)
        dst_end = dst_watch.wait_for("the end of the session", is_final, args.timeout_s)
        ended = True
        done_s = time.monotonic() - t_stop
        for role, st in (("source", src_end), ("destination", dst_end)):
            if st.phase != PHASE.SUCCEEDED:
                raise AgentError(f"the {role} session ended {describe_failure(st)}")
            log(f"{role} session SUCCEEDED")
        # The destination session is SUCCEEDED: now, and only now, the VMM may run the
        # devices it loaded there.
        for dev in devices:
            dev.reader.join(args.timeout_s)
            if dev.reader.is_alive():
                raise AgentError(f"{dev.name}: the destination never closed its resume-data fd")
            if dev.read_error:
                raise AgentError(dev.read_error)
        check(devices, src_end, dst_end, precopy_total, stop_total)
        log(f"moved {mib(total)}: PRE_COPY {mib(src_end.precopy_bytes)} in {pre_s:.2f} s "
            f"(with the VMM's pauses), STOP_COPY {mib(src_end.stop_copy_bytes)} in "
            f"{src_end.stop_copy_seconds * 1000:.1f} ms, the source's downtime "
            f"({rate(src_end.stop_copy_bytes, src_end.stop_copy_seconds)}); Switchover to both "
            f"SUCCEEDED {done_s:.2f} s; whole session {src_end.elapsed_seconds:.2f} s; fastest "
            f"rate the source measured (0.25 s windows) "
            f"{per_second(src_end.transfer_rate_bytes_per_second)}")
        integrity = sorted({d.integrity for d in dst_end.devices})
        log(f"destination verified the streams ({', '.join(integrity)})")
        print(f"summary: result=PASS session={sid} devices={len(devices)} bytes={total} "
              f"precopy_bytes={src_end.precopy_bytes} stop_copy_bytes={src_end.stop_copy_bytes} "
              f"switchover_ready_seen={str(src_watch.ready_first is not None).lower()} "
              f"destination_verified={str(dst_end.verified).lower()} "
              f"byte_exact=true", flush=True)

        # Tidy up: the sessions ended, their data fds are closed; forget the devices.
        for dev in devices:
            src.call("DetachDevice", pb.DetachDeviceRequest(name=dev.name))
            dst.call("DetachDevice", pb.DetachDeviceRequest(name=dev.name))
    except BaseException:
        # Before the point of no return a cancel abandons the migration on both sides (the
        # source's devices run on, the destination resets). Best effort: the first error is
        # what we report. (A destination left IN_DOUBT is settled with ResolveSession instead.)
        if (prepared or started) and not ended:
            for d, done in ((src, started), (dst, prepared)):
                if not done:
                    continue
                try:
                    st = d.stub.CancelSession(pb.CancelSessionRequest(session_id=sid),
                                              timeout=args.rpc_timeout_s)
                    log(f"CancelSession on the {d.role} daemon: the session is {phase_name(st)}")
                except grpc.RpcError as e:
                    # FAILED_PRECONDITION here: it ended already, or it is past the point of no
                    # return (a cancel is then refused: "too late").
                    log(f"CancelSession on the {d.role} daemon: {e.code().name}: {e.details()}")
        if switched and not ended:
            log("the failure came after Switchover: check both sessions' outcome "
                "(GetSession) before running the VM anywhere")
        raise
    finally:
        for w in watchers:
            w.stop()
        for dev in devices:
            dev.close()
        src.close()
        dst.close()


def check(devices: list[DeviceState], src_end, dst_end, precopy_total: int,
          stop_total: int) -> None:
    """What left the destination is exactly what entered the source, and the daemons counted
    each byte in the phase the VMM wrote it in."""
    problems = []
    for dev in devices:
        want = hashlib.sha256(dev.data).hexdigest()
        got = dev.digest.hexdigest()
        if dev.received != len(dev.data) or got != want:
            problems.append(f"{dev.name}: destination produced {dev.received} bytes "
                            f"sha256 {got[:16]}.., the source was given {len(dev.data)} bytes "
                            f"sha256 {want[:16]}..")
        else:
            log(f"{dev.name}: {dev.received} bytes out of the destination, sha256 {got[:16]}.. "
                "equal to what went into the source")
    if not dst_end.verified:
        problems.append("the destination session does not say verified")
    if src_end.precopy_bytes != precopy_total or src_end.stop_copy_bytes != stop_total:
        problems.append(f"the source counted {src_end.precopy_bytes} PRE_COPY and "
                        f"{src_end.stop_copy_bytes} STOP_COPY bytes; the VMM wrote "
                        f"{precopy_total} and {stop_total}")
    if problems:
        raise AgentError("verification failed: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[3]
    ap = argparse.ArgumentParser(
        description="Migrate pseudo-random device state between two migmoverd daemons in data-fd "
                    "mode with PRE_COPY, playing both hosts' agents and VMMs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--src_socket", required=True, help="source daemon's --grpc_socket")
    ap.add_argument("--src_fd_socket", required=True, help="source daemon's --fd_socket")
    ap.add_argument("--dst_socket", required=True, help="destination daemon's --grpc_socket")
    ap.add_argument("--dst_fd_socket", required=True, help="destination daemon's --fd_socket")
    ap.add_argument("--peer", default="",
                    help="destination's peer address host:port (default: the address "
                         "GetDaemonInfo reports, as bound)")
    ap.add_argument("--session_id", default="", help="default: py-agent-PID-TIME")
    ap.add_argument("--devices", type=int, default=2, help="devices to migrate together")
    ap.add_argument("--size", type=parse_size, default=parse_size("4MiB"),
                    help="device state per device (B, KiB, MiB, GiB)")
    ap.add_argument("--precopy_fraction", type=float, default=0.75,
                    help="share of each device's state written during PRE_COPY; the rest after "
                         "Switchover")
    ap.add_argument("--pieces", type=int, default=4, help="PRE_COPY writes per device")
    ap.add_argument("--pause_ms", type=int, default=500,
                    help="the VMM's pause between PRE_COPY pieces (nothing to read meanwhile)")
    ap.add_argument("--channel", choices=["pipe", "socketpair"], default="pipe",
                    help="what carries each data fd's stream")
    ap.add_argument("--data_path", default="", help="TransferOptions.data_path (auto, copy, "
                    "splice; empty: the daemon's default)")
    ap.add_argument("--idle_timeout_ms", type=int, default=0,
                    help="TransferOptions.idle_timeout_ms (0: the daemon's default); a "
                         "--pause_ms longer than this shows pauses keep the session alive")
    ap.add_argument("--seed", type=int, default=1, help="seed of the pseudo-random state")
    ap.add_argument("--timeout_s", type=float, default=120, help="limit of each wait")
    ap.add_argument("--rpc_timeout_s", type=float, default=10, help="deadline of each call")
    ap.add_argument("--connect_timeout_s", type=float, default=10,
                    help="how long to wait for each daemon's gRPC socket")
    ap.add_argument("--proto", type=Path, default=repo / "api" / "migmover.proto",
                    help="api/migmover.proto, from which the stubs are generated")
    ap.add_argument("--protoc", default=shutil.which("protoc") or "/usr/bin/protoc")
    ap.add_argument("--grpc_python_plugin",
                    default=shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin")
    args = ap.parse_args(argv)
    if args.devices < 1 or args.pieces < 1 or args.size < 1:
        ap.error("--devices, --pieces and --size must be positive")
    if not 0 < args.precopy_fraction <= 1:
        ap.error("--precopy_fraction must be in (0, 1]")

    global PHASE
    try:
        if grpc is None:
            raise UsageError(f"{sys.executable} cannot import grpc: install Debian's "
                             "python3-grpcio and python3-protobuf and run /usr/bin/python3")
        load_stubs(args.proto, args.protoc, args.grpc_python_plugin)
        PHASE = pb.SessionStatus.Phase
        run(args)
    except UsageError as e:
        print(f"agent: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except AgentError as e:
        print(f"agent: FAILED: {e}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("agent: interrupted", file=sys.stderr, flush=True)
        return EXIT_FAILED
    log("PASSED: both sessions SUCCEEDED and every byte arrived intact")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
