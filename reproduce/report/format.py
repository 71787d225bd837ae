"""The report's number formatting: the `fmt_*` Jinja filters. Missing values print as an em dash; the template
does no arithmetic, only formatting through these.
"""

from __future__ import annotations

import functools
import math

import jinja2


def _strict(filter_function):
    """A filter that fails on an undefined value (a missing key) instead of formatting it as 'n/a'."""

    @functools.wraps(filter_function)
    def wrapper(value, *args, **kwargs):
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()
        return filter_function(value, *args, **kwargs)

    return wrapper


def _missing(value) -> bool:
    """None (or NaN) is a legitimately absent number: no acceptance without drafted tokens, no CI from 1 prompt."""
    return value is None or (isinstance(value, float) and math.isnan(value))


@_strict
def fmt_num(value, digits: int = 2) -> str:
    return "n/a" if _missing(value) else f"{value:,.{digits}f}"


@_strict
def fmt_ms(value, digits: int = 1) -> str:
    return "n/a" if _missing(value) else f"{value:,.{digits}f} ms"


@_strict
def fmt_pct(value, digits: int = 1) -> str:
    return "n/a" if _missing(value) else f"{100 * value:.{digits}f}%"


@_strict
def fmt_usd(value) -> str:
    return "n/a" if _missing(value) else f"${value:,.2f}"


@_strict
def fmt_p(value) -> str:
    """p-values: three decimals, scientific below 0.001."""
    if _missing(value):
        return "n/a"
    if value == 0:  # the exact case: e.g. TOST on identical outputs
        return "0"
    return f"{value:.3f}" if value >= 1e-3 else f"{value:.1e}"


@_strict
def fmt_x(speedup, digits: int = 2) -> str:
    """A speedup: a number ('1.92x'), or a records.Speedup ('1.23x [1.05, 1.41]': the geometric mean of the
    per-prompt ratios, ArS over the method, with its 95% interval; '1.23x (n=1, no CI)' from a single prompt)."""
    if _missing(speedup):
        return "n/a"
    if isinstance(speedup, (int, float)):
        return f"{speedup:.{digits}f}x"
    if speedup.ci is None:
        return f"{speedup.ratio:.{digits}f}x (n={speedup.n}, no CI)"
    low, high = speedup.ci
    return f"{speedup.ratio:.{digits}f}x [{low:.{digits}f}, {high:.{digits}f}]"


@_strict
def fmt_ci(stat, digits: int = 3, percent: bool = False) -> str:
    """A mean with its interval, from a records.Stat: '0.112 [0.090, 0.131]' (a share of problems with its
    count: '3/12: 25.0% [8.9, 53.2]')."""
    if _missing(stat) or stat.mean is None:
        return "n/a"
    scale, suffix = (100, "%") if percent else (1, "")
    text = f"{scale * stat.mean:.{digits}f}{suffix}"
    if stat.successes is not None:
        text = f"{stat.successes}/{stat.n}: {text}"
    if stat.ci is None:
        return text
    low, high = stat.ci
    return f"{text} [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


@_strict
def fmt_metric(value, digits: int = 3, percent: bool = False, difference: bool = False, unit: bool = True) -> str:
    """A quality value: 0.031 (digits decimals), or a share as 25.0% (a difference of shares: 8.3 points;
    unit=False leaves the unit out, for an interval's ends)."""
    if _missing(value):
        return "n/a"
    if percent:
        return f"{100 * value:.{digits}f}" + ((" points" if difference else "%") if unit else "")
    return f"{value:.{digits}f}"


@_strict
def fmt_share(share, digits: int = 0) -> str:
    """A share of the paper's speedup gain (records.Share): '26% [14%, 39%]'."""
    if _missing(share):
        return "n/a"
    text = f"{100 * share.share:.{digits}f}%"
    if share.ci is None:
        return text
    low, high = share.ci
    return f"{text} [{100 * low:.{digits}f}%, {100 * high:.{digits}f}%]"


@_strict
def fmt_interval(interval, digits: int = 3) -> str:
    if _missing(interval):
        return "n/a"
    low, high = interval
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


@_strict
def fmt_value(value) -> str:
    """A sweep value or setting: 2.0 -> '2', 0.5 -> '0.5'."""
    if _missing(value):
        return "n/a"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@_strict
def fmt_params(count) -> str:
    """A parameter count: 134515008 -> '134.5M', 7e10 -> '70B', 0 -> '0'."""
    if _missing(count):
        return "n/a"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.1f}".rstrip("0").rstrip(".") + suffix
    return str(int(count))


@_strict
def fmt_duration(seconds) -> str:
    if _missing(seconds):
        return "unfinished"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


@_strict
def fmt_bytes(size) -> str:
    """A file size: 538000000 -> '538.0 MB', 1234 -> '1.2 kB' (decimal units), 12 -> '12 B'."""
    if _missing(size):
        return "n/a"
    for scale, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if size >= scale:
            return f"{size / scale:.1f} {suffix}"
    return f"{int(size)} B"


@_strict
def fmt_span(span, digits: int = 2, suffix: str = "") -> str:
    """A records.Span: '1.38' when both ends print alike, else '1.38-1.45' (suffix after each: 'x')."""
    if _missing(span):
        return "n/a"
    low, high = f"{span.low:.{digits}f}{suffix}", f"{span.high:.{digits}f}{suffix}"
    return low if low == high else f"{low} to {high}"


FILTERS = {f.__name__: f for f in (fmt_num, fmt_ms, fmt_pct, fmt_usd, fmt_p, fmt_x, fmt_ci, fmt_interval, fmt_value,
                                   fmt_params, fmt_duration, fmt_bytes, fmt_metric, fmt_share, fmt_span)}
