"""Server-side SVG charts of the observer's series (no charting library
to ship): ``/charts/throughput.svg``, ``/charts/latency.svg`` and
``/charts/failures.svg``, with the query parameters of ``/api/charts``.

Every piece of text is XML-escaped (queue names come from users); the
page loads the charts as images, where SVG runs no script anyway.
"""
import math
from xml.sax.saxutils import escape, quoteattr

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 40, 30

CHARTS = ('throughput', 'latency', 'failures')
COLORS = {'completed': '#3b82f6', 'failed': '#dc2626',
          'wait_p50': '#0891b2', 'wait_p95': '#a5f3fc',
          'duration_p50': '#7c3aed', 'duration_p95': '#ddd6fe'}
LABELS = {'completed': 'completed', 'failed': 'failed',
          'wait_p50': 'put to start p50', 'wait_p95': 'put to start p95',
          'duration_p50': 'run time p50', 'duration_p95': 'run time p95'}


def _number(value):
    if value >= 1000 or value == int(value):
        return '%d' % round(value)
    return '%.3g' % value


def nice(value):
    """The smallest of 1, 2, 2.5, 5 times a power of ten >= value (the
    top of an axis)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return step * power
    return 10 * power


def _clock(text):
    """'HH:MM' of an ISO time (UTC)."""
    return text[11:16] if text and len(text) >= 16 else ''


class _Canvas:

    def __init__(self, title, top, scale=1.0):
        self.top = top if top > 0 else 1
        self.scale = scale  # label value = value * scale
        self.parts = []
        self.title = title

    def y(self, value):
        return TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / self.top)

    def frame(self, series, unit):
        add = self.parts.append
        add('<text x="%d" y="16" font-size="13" font-weight="bold" '
            'fill="#111827">%s</text>' % (LEFT, escape(self.title)))
        for fraction in (0, 0.5, 1):
            value = self.top * fraction
            y = self.y(value)
            add('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e5e7eb"/>'
                % (LEFT, WIDTH - RIGHT, y, y))
            add('<text x="%d" y="%.1f" font-size="10" text-anchor="end" '
                'fill="#6b7280">%s</text>' % (LEFT - 4, y + 3, escape(
                    _number(value * self.scale) + unit)))
        times = series['times']
        if times:
            add('<text x="%d" y="%d" font-size="10" fill="#6b7280">%s</text>'
                % (LEFT, HEIGHT - 10, escape(_clock(times[0]) + ' UTC')))
            add('<text x="%d" y="%d" font-size="10" text-anchor="end" '
                'fill="#6b7280">%s</text>' % (WIDTH - RIGHT, HEIGHT - 10,
                                              escape(_clock(series['end']))))

    def legend(self, names):
        x = LEFT
        for name in names:
            label = LABELS[name]
            self.parts.append(
                '<rect x="%d" y="22" width="9" height="9" fill="%s"/>'
                '<text x="%d" y="30" font-size="10" fill="#374151">%s</text>'
                % (x, COLORS[name], x + 12, escape(label)))
            x += 24 + 6 * len(label)

    def bars(self, values, color, slot, offset=0.0, share=1.0):
        for i, value in enumerate(values):
            if not value:
                continue
            x = LEFT + slot * (i + offset) + 1
            y = self.y(value)
            self.parts.append(
                '<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" '
                'fill="%s"/>' % (x, y, max(slot * share - 2, 1),
                                 self.y(0) - y, color))

    def line(self, values, color, slot):
        points = ['%.1f,%.1f' % (LEFT + slot * (i + 0.5), self.y(v))
                  for i, v in enumerate(values) if v is not None]
        if len(points) == 1:
            x, y = points[0].split(',')
            self.parts.append('<circle cx="%s" cy="%s" r="2.5" fill="%s"/>'
                              % (x, y, color))
        elif points:
            self.parts.append(
                '<polyline fill="none" stroke="%s" stroke-width="2" '
                'points="%s"/>' % (color, ' '.join(points)))

    def svg(self, label):
        return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" '
                'height="%d" viewBox="0 0 %d %d" role="img" aria-label=%s '
                'font-family="Helvetica, Arial, sans-serif">'
                '<rect width="100%%" height="100%%" fill="#ffffff"/>%s</svg>'
                % (WIDTH, HEIGHT, WIDTH, HEIGHT, quoteattr(label),
                   ''.join(self.parts))).encode()


def render(name, series):
    """The SVG (bytes) of chart `name` for a series from
    ``Observer.series``."""
    queue = series.get('queue')
    scope = 'all queues' if queue is None else 'queue %r' % queue
    count = max(len(series['times']), 1)
    slot = (WIDTH - LEFT - RIGHT) / count
    width = series['bucket_seconds']
    if width == 60:
        per = 'per minute'
    elif width % 60:
        per = 'per %d s' % width
    else:
        per = 'per %d min' % (width // 60)
    if name == 'throughput':
        done, failed = series['completed'], series['failed']
        canvas = _Canvas('Jobs completed %s (%s)' % (per, scope),
                         nice(max(done + [1])))
        canvas.frame(series, '')
        canvas.bars(done, COLORS['completed'], slot)
        canvas.bars(failed, COLORS['failed'], slot)
        canvas.legend(['completed', 'failed'])
    elif name == 'failures':
        failed = series['failed']
        canvas = _Canvas('Failed jobs %s (%s)' % (per, scope),
                         nice(max(failed + [1])))
        canvas.frame(series, '')
        canvas.bars(failed, COLORS['failed'], slot)
        canvas.legend(['failed'])
    elif name == 'latency':
        names = ['wait_p50', 'wait_p95', 'duration_p50', 'duration_p95']
        values = [v for n in names for v in series[n] if v is not None]
        top = nice(max(values + [0]))
        milli = top < 1
        canvas = _Canvas('Put to start and run time (%s)' % scope, top,
                         1000.0 if milli else 1.0)
        canvas.frame(series, ' ms' if milli else ' s')
        for n in ('wait_p95', 'duration_p95', 'wait_p50', 'duration_p50'):
            canvas.line(series[n], COLORS[n], slot)
        canvas.legend(names)
    else:
        raise ValueError('unknown chart %r (charts: %s)' % (
            name, ', '.join(CHARTS)))
    return canvas.svg(canvas.title)
