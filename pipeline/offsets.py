"""Which offsets may be committed: per partition, the end of the finished prefix of work.

Bulks are sent while earlier ones are unanswered, and at shutdown or on a retry they may
settle in any order; one that failed may be followed by one that succeeded. Each bulk
holds, for each partition it read from, a run of that partition's records that starts
where the previous bulk's run ended. A partition's offset to commit is the end of the
longest run of finished bulks from its start: a later success never commits past an
earlier bulk that is unfinished or failed.
"""

from __future__ import annotations

from collections import deque

Partition = tuple[str, int]


class Run:
    """One bulk's records of one partition: they end before `end`."""

    __slots__ = ("end", "finished")

    def __init__(self, end: int) -> None:
        self.end = end
        self.finished = False


class Ticket(dict[Partition, Run]):
    """A bulk's runs, one per partition it read from."""


class Ledger:
    def __init__(self) -> None:
        self.runs: dict[Partition, deque[Run]] = {}

    def open(self, ends: dict[Partition, int]) -> Ticket:
        """A bulk with these partitions' records, each ending before its offset, in the order
        they were read: runs opened later are committed only after this one."""
        ticket = Ticket()
        for partition, end in ends.items():
            run = ticket[partition] = Run(end)
            self.runs.setdefault(partition, deque()).append(run)
        return ticket

    def finish(self, ticket: Ticket) -> dict[Partition, int]:
        """The bulk's records are all indexed or dead-lettered. Returns the partitions whose
        offset to commit moved, with that offset."""
        for run in ticket.values():
            run.finished = True
        moved: dict[Partition, int] = {}
        for partition in ticket:
            runs = self.runs.get(partition)
            while runs and runs[0].finished:
                moved[partition] = runs.popleft().end
        return moved

    def forget(self, partitions: set[Partition]) -> None:
        """Partitions revoked or lost: their runs are the next owner's to read again, and a
        run of theirs that finishes later moves nothing, even if they come back."""
        for partition in partitions:
            self.runs.pop(partition, None)

    def unfinished(self) -> dict[Partition, int]:
        """Per partition, how many runs are open: what a shutdown leaves uncommitted."""
        return {p: len(runs) for p, runs in self.runs.items() if runs}
