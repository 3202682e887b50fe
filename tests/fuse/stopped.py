"""stopped.py - run one file system call while every metaserver is stopped (SIGSTOP), for the fuse tests that
check that a call is answered by synod-mount alone."""
import os
import signal
import threading


def while_stopped(pids, fn, wait=0.5):
    """Stop pids, run fn() on a thread, and judge whether it returned within `wait` seconds (before the
    metaservers continue). Returns (in_time, results): results holds fn's return value once it returned (it
    gets 30 s after the metaservers continue)."""
    got = []
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        t = threading.Thread(target=lambda: got.append(fn()), daemon=True)
        t.start()
        t.join(wait)
        in_time = not t.is_alive()
    finally:
        for p in pids:
            os.kill(p, signal.SIGCONT)
    t.join(30)
    return in_time, got
