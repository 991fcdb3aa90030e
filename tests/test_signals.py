"""SIGTERM handling: a stop does not print tracebacks from DataLoader workers' shared-tensor handoffs."""
from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A process that offers a file descriptor through multiprocessing's resource sharer (as a DataLoader
# worker offers each batch's shared memory), then a peer that connects and hangs up mid-handshake (as a
# parent stopped by SIGTERM does): the sharer's thread meets a broken pipe and reports it.
HANDOFF_BROKEN_BY_PEER = """
import os, socket, sys, time
from multiprocessing import resource_sharer
if sys.argv[1] == "quiet":
    from lpld.utils.signals import quiet_broken_handoffs
    quiet_broken_handoffs()
read_end, _ = os.pipe()
handoff = resource_sharer.DupFd(read_end)
with socket.socket(socket.AF_UNIX) as peer:
    peer.connect(handoff._id[0])
time.sleep(1.0)
raise ValueError("a real error still reports")
"""


def _run(mode: str) -> str:
    proc = subprocess.run([sys.executable, "-c", HANDOFF_BROKEN_BY_PEER, mode], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    return proc.stderr


def test_broken_handoff_is_silenced_and_real_errors_still_report():
    loud = _run("loud")
    assert "resource_sharer.py" in loud, loud  # the control: without the hook the noise is printed
    quiet = _run("quiet")
    assert "resource_sharer.py" not in quiet, quiet
    assert "ValueError: a real error still reports" in quiet, quiet


# SIGTERM delivered while a finalizer runs (here a __del__ that signals its own process; in a stage,
# the queues of a DataLoader iterator collected between epochs): Python ignores an exception raised
# in a finalizer, so a stop raised there would be lost and the run would carry on to its end.
STOP_DURING_FINALIZER = """
import os, signal, sys, time
from lpld.utils import signals

class SignalsWhenCollected:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the handler runs here, inside the finalizer

with signals.terminate_like_interrupt():
    try:
        SignalsWhenCollected()  # collected at once
        for _ in range(100):  # the rest of the run
            time.sleep(0.02)
    except signals.Terminated:
        print("stopped", flush=True)
        sys.exit(0)
print("carried on", flush=True)
"""


def test_a_stop_that_arrives_inside_a_finalizer_is_not_lost():
    proc = subprocess.run([sys.executable, "-c", STOP_DURING_FINALIZER], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert proc.stdout.strip() == "stopped", (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
