"""Ctrl-C (SIGINT) interrupts a long call: the library's relaxations poll hepsim's interrupt flag,
a subcommand too, and a training run stops after its step with a checkpoint; each raises
KeyboardInterrupt in Python, which stays usable."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

CHILD = textwrap.dedent("""
    import sys, time, numpy as np, hepsim
    what = sys.argv[1]
    hepsim.set_threads(1)  # no thread team to keep in step on a loaded machine
    m = hepsim.sim.Model("mlp_2-256", 784, 10)
    th = m.init()
    x = np.random.default_rng(0).random((50, 784))
    t0 = time.time()
    try:
        print("started", flush=True)
        if what == "library":      # a fixed budget of 10^8 steps: hours
            hepsim.sim.relax(m, th, x, max_steps=100_000_000)
        elif what == "command":
            hepsim.relax(samples=1000, max_steps=10_000_000, tol=1e-300, stall_window=0, threads=1)
        elif what == "ignored":   # SIGINT ignored by the program: hepsim leaves it so
            import signal
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            hepsim.sim.relax(m, th, x, max_steps=3000)
        elif what == "train":
            hepsim.train(out=sys.argv[2], epochs=50, train_limit=6000, test_limit=100, quiet=True, threads=1)
        else:                      # steps of several seconds: a second signal lands inside one
            hepsim.train(out=sys.argv[2], epochs=50, train_limit=6000, test_limit=100, batch_size=3000, T1=400,
                         quiet=True, threads=1)
        print("finished", flush=True)
    except KeyboardInterrupt as e:
        print("interrupted after %.1f s: %s" % (time.time() - t0, e), flush=True)
    # The module is still usable and the flag cleared.
    r = hepsim.sim.relax(m, th, x[:2], max_steps=5)
    print("then", r["states"].shape, flush=True)
""")


def start(what, tmp_path):
    p = subprocess.Popen([sys.executable, "-c", CHILD, what, str(tmp_path / "run")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "started"
    time.sleep(2.0)
    return p


@pytest.mark.parametrize("what", ["library", "command", "train"])
def test_ctrl_c_interrupts(what, tmp_path):
    p = start(what, tmp_path)
    sent = time.time()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("interrupted"), out + err
    assert time.time() - sent < 30
    assert lines[1] == "then (2, 522)"
    if what == "train":
        assert "stopped by SIGINT" in lines[0]
        assert os.path.exists(tmp_path / "run" / "checkpoint.h5")


def test_a_second_ctrl_c_in_training_does_not_end_python(tmp_path):
    # The CLI ends at once on a second signal; inside Python the step in progress is abandoned
    # instead (the last checkpoint stays as it was) and Python goes on.
    p = start("long steps", tmp_path)
    p.send_signal(signal.SIGINT)
    time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    # The step was abandoned (hepsim's interrupt), not stopped at its end (the first signal's path).
    assert out.splitlines()[0].startswith("interrupted"), out + err
    assert out.splitlines()[0].endswith("hepsim: interrupted"), out
    assert out.splitlines()[1] == "then (2, 522)"


def test_an_ignored_sigint_stays_ignored(tmp_path):
    p = start("ignored", tmp_path)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert out.splitlines()[0] == "finished", out + err
