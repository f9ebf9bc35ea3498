"""Running train.py on a shared cluster: preemption, one run per out dir, a step order that survives
a new number of processes. Harness only: nothing here belongs to the paper; train.py calls it.

    torchrun --nproc_per_node=4 train.py --stage vae --save-every 500   # a mid-epoch last.pt every 500 steps
    kill -TERM PID        # or SIGUSR1, or the scheduler's preemption: every rank finishes its step,
                          # last.pt is saved, and the workers exit with status 75 (PREEMPTED)
    torchrun --nproc_per_node=2 train.py --stage vae                    # continues from that step, on 2

What happens in each case, with the command that shows it: docs/failure-behaviour.md.
"""
import atexit
import fcntl
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback

import torch
import torch.distributed as dist

from data import collate
from harness import DataError

if dist.is_available():
    # Before init_process_group: torch.distributed.nn.functional's collectives have `group=group.WORLD`
    # as a default argument, evaluated when the module is imported. DDP imports it lazily (through
    # torch._dynamo); imported after init_process_group, those defaults keep the world group, its gloo
    # threads and sockets alive after destroy_process_group, until the interpreter's final garbage
    # collection tears them down while the other ranks exit. A gloo thread that then needs the GIL (to
    # free a tensor it still holds) is ended by the finalizing interpreter from inside a C++ destructor:
    # "terminate called without an active exception", SIGABRT, and torchrun reports a finished run as
    # failed. train.py imports this module before it starts the process group.
    import torch.distributed.nn  # noqa: F401,E402

log = logging.getLogger("a2vslp")

PREEMPTED = 75          # exit status of a preempted run: EX_TEMPFAIL of sysexits.h, "try again later"
LOCK_NAME = "run.lock"  # OUT_DIR/run.lock names the run that holds the out dir (pid, host)


# ---------------------------------------------------------------------------------------------
# Preemption: SIGTERM, and SIGUSR1 that schedulers send some time before the end
# ---------------------------------------------------------------------------------------------

class Preempted(Exception):
    """Raised on every rank once last.pt holds the step at which they all stopped; the message (rank 0's
    only, empty elsewhere) says where."""


def catch_preemption():
    """From now on SIGTERM and SIGUSR1 do not end the process: their names are appended to the returned
    list, which the training loop all-reduces at every step, so that every rank stops after the same step.
    Signal handlers belong to the main thread; elsewhere nothing is caught."""
    caught = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, lambda signum, frame: caught.append(signal.Signals(signum).name))
    return caught


def preempted(caught, epoch, step, batch, batches, last_path, master):
    """Raise Preempted once every rank has caught, or heard of, a preemption signal and last.pt holds
    `step` (`batch` global batches of `batches` into epoch `epoch` + 1; 0: the end of `epoch`)."""
    where = f"step {step} (epoch {epoch + 1}, batch {batch} of {batches})" if batch else \
        f"step {step} (the end of epoch {epoch})"
    signals = ", ".join(sorted(set(caught))) or "signal caught by another rank"
    message = (f"preempted ({signals}): stopped after {where}; {last_path} holds it, the same "
               f"command continues from there (exit {PREEMPTED})")
    log.info("%s", message)
    raise Preempted(message if master else "")


def run(fn, progress):
    """fn() with the endings of a training run: an error is one line (status 1), a preemption exits
    with status 75, a Ctrl-C prints where the run stopped and what last.pt holds (`progress`, a
    harness.Progress) and exits with status 130."""
    try:
        fn()
    except (ValueError, FloatingPointError, OSError) as e:      # DataError is a ValueError
        sys.exit(f"error: {e}")
    except Preempted as e:
        if str(e):
            print(e, file=sys.stderr)
        exit_quietly()
        sys.exit(PREEMPTED)
    except KeyboardInterrupt:
        print(progress.interrupted(), file=sys.stderr)
        sys.exit(130)


def exit_quietly():
    """Before a preempted rank exits: SIGTERM and SIGUSR1 are ignored from here on (Python restores their
    default action, death, while it shuts down, and torchrun sends SIGTERM to the ranks still running
    as soon as one has exited: that would turn their status 75 into a death by signal)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    end_distributed()


def end_distributed():
    """destroy_process_group such that it really ends the group here, while Python runs normally: the
    frames of the exception being handled (when called from an except block), whose DDP wrapper's
    reducer holds the group, are cleared first. Otherwise the group ends when that reducer is freed,
    with the GIL held (a gloo thread waiting for the GIL then deadlocks its join), or while the
    interpreter finalizes (SIGABRT)."""
    tb = sys.exc_info()[2]
    if tb is not None:
        traceback.clear_frames(tb)
    if dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# The step order: global batches, whatever the number of processes
# ---------------------------------------------------------------------------------------------

class GlobalBatchSampler(torch.utils.data.Sampler):
    """This rank's share of each global batch. An epoch is one permutation of the training set cut into
    global batches of `batch_size` (the last one may be smaller); rank r of W takes items r, r + W, ...
    of each. The samples of a step are then the same for every world size, and a resume skips whole
    global batches (set_epoch's `first`).

    DistributedSampler is not used: it pads the ranks to equal length with repeated samples and cuts
    each rank's list on its own, so with N not divisible by W a step's samples depend on W. The
    permutation is the one DistributedSampler(shuffle=True, seed=seed) draws, so with N divisible by W
    the batches are the ones it gave. A rank without a sample in a global batch (only the epoch's last
    one can be smaller than W) gets an empty list: collate_share turns it into None, a stand-in step.
    """

    def __init__(self, n, batch_size, rank, world, seed):
        self.n, self.batch_size, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.epoch, self.first = 0, 0

    def set_epoch(self, epoch, first=0):
        """Epoch `epoch`'s order, from global batch `first` on (those before it were done before a resume)."""
        self.epoch, self.first = epoch, first

    def batches_per_epoch(self):
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        for start in range(self.first * self.batch_size, self.n, self.batch_size):
            yield order[start:start + self.batch_size][self.rank::self.world]

    def __len__(self):
        return max(0, self.batches_per_epoch() - self.first)


def dev_shard(n, rank, world):
    """This rank's dev samples: each on exactly one rank, shard sizes differing by at most one. Ranks
    may then run different numbers of dev batches: the loop's dev pass has one collective, at its end."""
    return list(range(rank, n, world))


def collate_share(items):
    """data.collate of a rank's share of a global batch; None for an empty share (the loop then runs a
    stand-in batch weighted 0, since under DDP every rank must take part in every step)."""
    return collate(items) if items else None


# ---------------------------------------------------------------------------------------------
# One run per out dir: OUT_DIR/run.lock
# ---------------------------------------------------------------------------------------------

def lock_out_dir(out_dir, distributed):
    """Rank 0 takes OUT_DIR/run.lock (making OUT_DIR) for the rest of the process's life; the other ranks
    of its job are never refused. A DataError on every rank when another run holds it."""
    refusal = None
    if not distributed or dist.get_rank() == 0:
        try:
            _take_lock(out_dir)
        except DataError as e:
            refusal = str(e)
    if distributed:
        box = [refusal]
        dist.broadcast_object_list(box, src=0)
        refusal = box[0]
    if refusal:
        raise DataError(refusal)


def _start_time(pid):
    """The start time of process `pid` in clock ticks after boot (from /proc), "ended" for a process
    that has exited but not yet been reaped (a zombie), or None if not known."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return "ended" if fields[0] in ("Z", "X") else fields[19]
    except (OSError, IndexError):
        return None


def _alive(holder):
    """Whether the process a lock file names still runs: True/False on this host, None on another."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # another user's process
        pass
    except (OSError, TypeError, ValueError, OverflowError):
        return False
    # an exited process not yet reaped, or a pid reused by another process since (its start time differs)
    start = _start_time(pid)
    return start != "ended" and (holder.get("start") is None or start in (None, holder["start"]))


def _read_holder(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    try:
        holder = json.loads(text)
        return holder if isinstance(holder, dict) else {}
    except ValueError:               # a lock written by hand or by something else: "PID HOST"
        pid, _, host = text.partition(" ")
        return {"pid": int(pid), "host": host.strip() or socket.gethostname()} if pid.isdigit() else {}


def _take_lock(out_dir):
    """flock(2) on OUT_DIR/run.lock arbitrates (the kernel, or the network file system's lock server,
    frees it when its process dies); the file's pid and host name the holder. On a file system without
    flock, the pid rule alone: a live pid on this host, or any pid on another host, holds the out dir."""
    made = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, LOCK_NAME)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            kernel = True
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataError(_refusal(out_dir, path, holder, kernel=True)) from None
        except OSError:              # no flock on this file system
            kernel = False
        try:                         # a holder that ended removes the file: lock the new one instead
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    holder = _read_holder(fd)
    if holder.get("pid") not in (None, os.getpid()):
        alive = _alive(holder)
        if alive or (alive is None and not kernel):
            os.close(fd)
            raise DataError(_refusal(out_dir, path, holder, kernel))
        log.warning("%s: the run that held it (pid %s on %s) has ended; taking it over", path,
                    holder.get("pid"), holder.get("host"))
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(me) + "\n").encode())
    os.fsync(fd)
    atexit.register(_release, fd, path, out_dir if made else None)


def _refusal(out_dir, path, holder, kernel):
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    since = f", running since {holder['since']}" if holder.get("since") else ""
    hint = "" if kernel or holder.get("host") == socket.gethostname() else \
        f"; this file system has no flock and that host cannot be asked: if that run has ended, delete {path}"
    return (f"{out_dir} is in use by another run ({who}{since}): one run per out dir; wait for it to end or "
            f"choose another --out-dir (nothing was changed){hint}")


def _release(fd, path, made_dir):
    """Remove the lock file (while still holding it, so that nobody locks the removed file), close it,
    and remove OUT_DIR again if this run made it and left nothing in it (a refused run)."""
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.remove(path)
    except OSError:
        pass
    os.close(fd)
    if made_dir is not None:
        try:
            os.rmdir(made_dir)
        except OSError:
            pass
