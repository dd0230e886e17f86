"""The controller's handle on one worker process: start it with a stack's interpreter, send a
request, read its reply within a time limit (a stack that hangs must not hang the comparison)."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from pathlib import Path

from csm_conformance.tools.ab.turns import TURN

PACKAGE_PARENT = Path(__file__).resolve().parents[3]  # the directory holding csm_conformance/
REPLY_TIMEOUT_S = {"setup": 1800.0, "prepare": 3600.0}  # loads and compiles; every other request:
DEFAULT_TIMEOUT_S = 900.0


class WorkerError(RuntimeError):
    """A worker could not start, died, hung or refused a request; the message is one line, `side`
    says whose."""

    def __init__(self, message: str, side: str | None = None):
        super().__init__(message)
        self.side = side


class WorkerProcess:
    def __init__(self, label: str, python: str, log_path: Path, env_extra: dict | None = None, turn_fds: tuple[int, int] | None = None):
        """`turn_fds` (read, write): this worker's ends of the turn pipes (turns.py), inherited."""
        self.label, self.python, self.log_path = label, python, log_path
        env = dict(os.environ)
        if turn_fds:
            env["CSM_AB_TURN_FDS"] = ",".join(map(str, turn_fds))
        # the controller's copy of the harness on both sides: only the stack under it differs
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_PARENT), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        env.update(env_extra or {})
        self._buffer = b""
        self._log = open(log_path, "w")
        try:
            self.proc = subprocess.Popen([python, "-m", "csm_conformance.tools.ab.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._log, env=env, pass_fds=turn_fds or ())
        except OSError as exc:
            self._log.close()
            raise WorkerError(f"{label}: cannot start {python}: {exc.strerror or exc}", label) from None

    def _fail(self, what: str) -> WorkerError:
        return WorkerError(f"{self.label}: {what}: {self.last_log_line()}", self.label)

    def send(self, op: str, **fields) -> None:
        self._op = op
        try:
            self.proc.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            raise self._fail(f"the worker ({self.python}) has exited") from None

    def _readline(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.proc.kill()
                    raise WorkerError(f"{self.label}: no reply to '{self._op}' within {timeout:.0f} s: the worker was stopped "
                                      f"(hung? log: {self.log_path})", self.label)
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def has_reply(self) -> bool:
        return b"\n" in self._buffer

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def receive(self, timeout: float | None = None) -> dict:
        line = self._readline(timeout or REPLY_TIMEOUT_S.get(self._op, DEFAULT_TIMEOUT_S))
        if not line.strip():
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            raise self._fail(f"the worker ({self.python}) exited with code {self.proc.returncode}")
        try:
            reply = json.loads(line)
        except ValueError:
            raise WorkerError(f"{self.label}: the worker wrote something that is not a reply: {line[:120]!r}", self.label) from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise WorkerError(f"{self.label}: {reply.get('error', 'request failed') if isinstance(reply, dict) else 'request failed'}", self.label)
        return reply

    def request(self, op: str, **fields) -> dict:
        self.send(op, **fields)
        return self.receive()

    def last_log_line(self) -> str:
        self._log.flush()
        lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else "(no output)"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self._readline(30)
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class TurnPipes:
    """The two pipes of frame-interleaved rounds (turns.py): each worker reads its own and writes
    the other's; the controller keeps a write end of each, to give the first turn of a round."""

    def __init__(self):
        self.before_r, self.before_w = os.pipe()
        self.after_r, self.after_w = os.pipe()

    def worker_fds(self, label: str) -> tuple[int, int]:
        return (self.before_r, self.after_w) if label == "before" else (self.after_r, self.before_w)

    def started(self) -> None:
        """Both workers hold their ends: the controller drops the read ends it never reads."""
        for fd in (self.before_r, self.after_r):
            os.close(fd)
        self.before_r = self.after_r = -1

    def give_first_turn(self, label: str) -> None:
        os.write(self.before_w if label == "before" else self.after_w, TURN)

    def close(self) -> None:
        for fd in (self.before_r, self.after_r, self.before_w, self.after_w):
            if fd >= 0:
                os.close(fd)
        self.before_r = self.after_r = self.before_w = self.after_w = -1


def receive_both(sides: dict[str, WorkerProcess], turn_timeout_s: float) -> dict[str, dict]:
    """Both replies of a frame-interleaved round, in whichever order they come, so that a side that
    dies is seen at once. A side whose partner held the turn past `turn_timeout_s` blames the
    partner (it hung, or died holding the turn): that one is stopped and is the failure."""
    replies: dict[str, dict] = {}
    pending = dict(sides)
    try:
        while pending:
            label = _first_ready(pending, DEFAULT_TIMEOUT_S) or next(iter(pending))
            try:
                replies[label] = pending.pop(label).receive()
            except WorkerError as exc:
                if "TurnTimeout" in str(exc):
                    other = "after" if label == "before" else "before"
                    sides[other].kill()
                    raise WorkerError(f"{other}: held its turn for more than {turn_timeout_s:.0f} s: the worker was stopped "
                                      f"(hung? log: {sides[other].log_path})", other) from None
                raise
    except WorkerError:
        for side in sides.values():  # the other is mid-round, in a state no later request can use
            side.kill()
        raise
    return replies


def _first_ready(pending: dict[str, WorkerProcess], timeout: float) -> str | None:
    for label, side in pending.items():
        if side.has_reply():
            return label
    with selectors.DefaultSelector() as sel:
        for label, side in pending.items():
            sel.register(side.proc.stdout.fileno(), selectors.EVENT_READ, label)
        events = sel.select(timeout)
    return events[0][0].data if events else None
