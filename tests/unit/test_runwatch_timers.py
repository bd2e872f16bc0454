"""The reactor calls a dispatcher's RunWatch arms for a run (its time
limit, the end of a grace period) never outlive the run: a run that ends
while its time limit is being armed leaves no delayed call behind.  A fake
reactor runs the watch's reactor-side calls in the test's thread."""
import datetime

from zcasync import threadlocal
from zcasync import utils
from zcasync.runwatch import RunWatch
from zcasync.workerpool import Run


class FakeCall:
    def __init__(self):
        self.cancelled = False

    def active(self):
        return not self.cancelled

    def cancel(self):
        self.cancelled = True


class FakeReactor:
    def __init__(self):
        self.queued = []
        self.delayed = []
        self.during = None  # called inside the next callLater

    def callFromThread(self, func, *args):
        self.queued.append((func, args))

    def callLater(self, delay, func, *args):
        during, self.during = self.during, None
        if during is not None:
            during()
        call = FakeCall()
        self.delayed.append(call)
        return call

    def runQueued(self):
        while self.queued:
            func, args = self.queued.pop(0)
            func(*args)


class FakeDispatcher:
    activated = True
    conn = None

    def __init__(self):
        self.reactor = FakeReactor()


class FakeRunner:
    def __init__(self):
        self.dispatcher = FakeDispatcher()


class FakeJob:
    _annotations = None
    timeout = datetime.timedelta(seconds=60)

    def __init__(self):
        self.active_start = utils.now()

    def peekAnnotations(self):
        return {}


def test_a_run_ending_while_its_time_limit_is_armed_leaves_no_timer():
    watch = RunWatch(FakeRunner())
    reactor = watch.dispatcher.reactor
    try:
        watch.opening()
        entry = watch.begin(FakeJob(), Run((b'j', ''), 'token', None),
                            None, 'job')
        # the run ends (its worker thread) while the reactor arms its
        # time limit
        reactor.during = lambda: watch.end(entry.control)
        reactor.runQueued()
        reactor.runQueued()
        assert len(reactor.delayed) == 1
        assert not reactor.delayed[0].active(), 'a timer outlived its run'
        assert not watch.running()
    finally:
        threadlocal.setRunControl()


def test_a_run_ending_after_its_time_limit_was_armed_cancels_it():
    watch = RunWatch(FakeRunner())
    reactor = watch.dispatcher.reactor
    try:
        watch.opening()
        watch.begin(FakeJob(), Run((b'j', ''), 'token', None), None, 'job')
        reactor.runQueued()
        assert reactor.delayed[0].active()
        watch.end()
        reactor.runQueued()
        assert not reactor.delayed[0].active()
    finally:
        threadlocal.setRunControl()
