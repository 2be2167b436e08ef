"""One clock for time to expiry: ACT/365 years to the exchange's session close on the expiry day, on the
exchange's wall clock; daylight saving and early closes are honoured, and orders use the same clock."""

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from aitrade import clock, execution
from aitrade.execution import OrderRequest, Quote

YEAR_S = 365.0 * 86400.0


def test_the_close_moves_with_daylight_saving_and_early_closes():
    assert clock.expiry_close(date(2026, 7, 17)) == pd.Timestamp("2026-07-17 20:00", tz="UTC")  # EDT
    assert clock.expiry_close(date(2026, 1, 16)) == pd.Timestamp("2026-01-16 21:00", tz="UTC")  # EST
    assert clock.expiry_close(date(2019, 11, 29)) == pd.Timestamp("2019-11-29 18:00", tz="UTC")  # 13:00 ET
    # inside the replayed calendar, the clock's close is the calendar's session close
    for d in ("2019-11-29", "2019-07-03", "2018-12-24", "2015-06-19", "2015-01-16"):
        assert clock.expiry_close(pd.Timestamp(d)) == clock.session_close(d)


@pytest.mark.parametrize(
    "expiry,hours",
    [(date(2026, 7, 17), 6), (date(2026, 1, 16), 7), (date(2019, 11, 29), 4)],
)
def test_an_orders_T_runs_to_the_close_of_its_expiry_day(expiry, hours):
    "At 14:00 UTC on the expiry day: 6 hours to a July close, 7 to a January one, 4 to an early close."
    now = datetime(expiry.year, expiry.month, expiry.day, 14, 0, tzinfo=UTC)
    req = OrderRequest("dst", "SPX", "buy", 1, "C", expiry, 100.0)
    quote = Quote(4.9, 5.1, 10, 7, 100.0, now)
    assert execution.order_risk(req, quote, now)["T"] == hours * 3600 / YEAR_S
    assert clock.time_to_expiry(now, expiry) == hours * 3600 / YEAR_S


def test_end_of_day_quotes_count_whole_days_across_daylight_saving():
    # 2019-03-10 and 2019-11-03 change the New York clock; between regular closes the count stays whole
    assert clock.time_to_expiry(date(2019, 3, 8), date(2019, 3, 15)) == 7 / 365
    assert clock.time_to_expiry(date(2019, 11, 1), date(2019, 11, 8)) == 7 / 365
    q = pd.Series(pd.to_datetime(["2019-03-08", "2019-03-11"]))
    e = pd.Series(pd.to_datetime(["2019-03-15", "2019-03-15"]))
    np.testing.assert_array_equal(clock.time_to_expiry(q, e), [7 / 365, 4 / 365])
    # a quote dated on an early-close day is taken at 13:00: three hours more to a regular close
    assert clock.time_to_expiry(date(2019, 11, 29), date(2019, 12, 6)) == (7 * 86400 + 3 * 3600) / YEAR_S
    # an instant at a session close and the day of that close give the same T
    close = clock.session_close("2019-07-12").to_pydatetime()
    assert clock.time_to_expiry(close, date(2019, 7, 19)) == clock.time_to_expiry(
        date(2019, 7, 12), date(2019, 7, 19)
    )
