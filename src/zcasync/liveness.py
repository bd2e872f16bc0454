"""When may a dispatcher declare its neighbour in the ring dead?

Each dispatcher looks at the next one in its queue's ring (see
``zcasync.registry``) at every heartbeat.  Comparing the neighbour's last
ping with the clock is not enough:

- clocks of different machines disagree;
- after an outage of the storage server, every process reconnects at
  once and finds every other process's last ping old: not because the
  others stopped, but because nobody could write.  Declaring them dead
  then hands their running jobs to recovery while they still run them.

So a process declares a neighbour dead only after it has itself *watched*
the neighbour's liveness stamp (last ping, or activation) stay unchanged
for a whole ``ping_death_interval`` of its own time, while it could see
the database all along.  Time in which this process could not see the
database (a failed poll, a disconnected storage, a gap between polls much
longer than its heartbeat) restarts every watch.

``DeathWatch`` holds that knowledge for one dispatcher; the dispatcher
passes its ``isDead`` to ``queue.dispatchers.ping``.
"""
import datetime


class DeathWatch:
    """What one dispatcher has seen of its neighbours' liveness stamps."""

    def __init__(self, heartbeat):
        #: the longest normal gap between two successful polls (seconds)
        self.heartbeat = heartbeat
        self._seen = {}  # (queue name, uuid) -> (stamp, first seen at)
        self._last_view = None

    def begin(self, now):
        """A poll starts at `now`, before it judges anyone.  A gap much
        longer than the heartbeat since the last successful poll means
        this process was blind meanwhile (paused, blocked, disconnected):
        every watch starts again."""
        last = self._last_view
        if last is not None:
            gap = (now - last).total_seconds()
            if gap > 2 * self.heartbeat + 1:
                self._seen.clear()

    def saw(self, now):
        """The database was seen by the poll that started at `now`."""
        self.begin(now)
        self._last_view = now

    def blind(self):
        """This process could not see the database (a poll failed, the
        storage is disconnected): forget what was watched."""
        self._seen.clear()
        self._last_view = None

    def isDead(self, queue_name, agents, now):
        """Whether the dispatcher `agents` (a DispatcherAgents) has been
        watched without a new liveness stamp for its whole death
        interval."""
        stamp = agents.last_ping.value or agents.activated
        key = (queue_name, agents.UUID)
        seen = self._seen.get(key)
        if seen is None or seen[0] != stamp:
            self._seen[key] = (stamp, now)
            return False
        return now - seen[1] >= agents.ping_death_interval


def checkIntervals(ping_interval, ping_death_interval):
    """Refuse ping settings that make a healthy dispatcher look dead: a
    dispatcher writes its ping every `ping_interval`, and a sibling must
    see at least two pings go by in a death interval (one late ping, e.g.
    a slow commit, must not be fatal).  Accepts timedeltas or seconds;
    returns an error message, or None when the settings are sound."""
    def seconds(value):
        if isinstance(value, datetime.timedelta):
            return value.total_seconds()
        return float(value)
    ping, death = seconds(ping_interval), seconds(ping_death_interval)
    if ping <= 0 or death <= 0:
        return ('the ping interval (%g s) and the ping death interval (%g s) '
                'must both be positive' % (ping, death))
    if death < 2 * ping:
        return ('a ping death interval of %g s with a ping interval of %g s '
                'would declare a healthy dispatcher dead after one late '
                'ping: make the death interval at least twice the ping '
                'interval (e.g. ping every %g s, dead after %g s)'
                % (death, ping, death / 2 if death > 0 else 30,
                   death if death > 0 else 60))
    return None
