"""Start a command at the lowest CPU priority: ``python -m worker.lowpriority COMMAND [ARG ...]``.

For background work that must use only CPU time nobody else wants: the shadow model versions' worker
(worker/commands.py: shadow_worker_command). On a machine whose cores the active worker keeps busy, a shadow
version at normal priority takes half of them (bench/shadow.py measured the active rate at 0.66 of its rate
without a shadow); at the lowest priority it runs only while the active worker waits (for work, the
database, the disk) and catches up when the active queue is empty.

Before it replaces itself with the command (exec: same pid; every thread and child the command starts
inherits all of this):

- ``nice`` 19: under CFS/EEVDF a weight of 15 against 1,024 for a normal process (about 1.5 % of a core
  when both want it);
- the ``SCHED_IDLE`` policy (Linux): a weight of 3, a CPU running only idle-policy tasks counts as idle
  for the load balancer, and a normal task that wakes up preempts an idle-policy task at once;
- the autogroup's nice to 19, when CFS autogroups are on (``/proc/sys/kernel/sched_autogroup_enabled``,
  the default of many desktop and some server distributions) and this process leads its own session:
  with autogroups each session is one scheduling group that competes at its *group's* weight, so a nice
  or idle-policy process alone in its session would otherwise still get a full share against the
  active worker's session. In a session shared with other processes (a terminal that started everything)
  the group is left alone: lowering it would lower them too; there the process-level settings already
  act, because processes of one session are scheduled against each other.

Not covered: a separate cgroup with the ``cpu`` controller (systemd units, containers) competes at its
cgroup's weight; give that cgroup the low weight (systemd ``CPUWeight=idle`` or ``Nice=19`` +
``CPUSchedulingPolicy=idle``; Kubernetes: a small CPU request) -- docs/governance.md says how.

Imports nothing of the application (nothing is configured before the command starts).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

LOWEST_NICE = 19
AUTOGROUP_ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")
AUTOGROUP_SELF = Path("/proc/self/autogroup")


def autogroups_enabled(flag: Path = AUTOGROUP_ENABLED) -> bool:
    try:
        return flag.read_text().strip() == "1"
    except OSError:
        return False


def leads_own_session() -> bool:
    return os.getsid(0) == os.getpid()


def _set_autogroup_nice(nice: int) -> bool:
    # The kernel accepts one autogroup change per 100 ms machine-wide from an unprivileged process.
    for _ in range(20):
        try:
            AUTOGROUP_SELF.write_text(f"{nice}\n")
        except BlockingIOError:  # EAGAIN: another change in the last 100 ms
            time.sleep(0.11)
        except OSError:
            return False
        else:
            return True
    return False


def lower_priority() -> list[str]:
    """Lower this process to the lowest CPU priority it can get; what was applied, for the log."""
    applied = []
    with contextlib.suppress(OSError):
        os.nice(LOWEST_NICE - os.getpriority(os.PRIO_PROCESS, 0))
    applied.append(f"nice {os.getpriority(os.PRIO_PROCESS, 0)}")
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:
            applied.append(f"SCHED_IDLE refused ({exc.strerror})")
        else:
            applied.append("SCHED_IDLE")
    if autogroups_enabled():
        if leads_own_session() and _set_autogroup_nice(LOWEST_NICE):
            applied.append(f"autogroup nice {LOWEST_NICE}")
        else:
            applied.append("autogroup shared or not settable: left alone")
    return applied


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: python -m worker.lowpriority COMMAND [ARG ...]\n")
        return 2
    applied = lower_priority()
    sys.stderr.write(f"lowest CPU priority ({', '.join(applied)}): {' '.join(argv)}\n")
    sys.stderr.flush()
    os.execvp(argv[0], argv)  # noqa: S606 -- the command line is the project's own (worker/commands.py)
    return 127  # not reached: exec replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
