"""Small data the API tests share."""

from __future__ import annotations

import datetime as dt

from aitrade import store
from aitrade.marketdata import OptionQuote, ensure_underlyings


def fresh_quote(symbol: str = "SPX", days: int = 180) -> dt.date:
    "One call quote of `symbol` stamped now (strike 100, bid 4.9, ask 5.1, spot 100), expiring in `days`; its expiry."
    now = store.utcnow()
    exp = (now + dt.timedelta(days=days)).date()
    with store.session_scope() as s:
        ensure_underlyings(s, [symbol])
        s.add(OptionQuote(underlying=symbol, quote_date=now.date(), ts=now, expiry=exp, strike=100.0,
                          option_type="C", bid=4.9, ask=5.1, bid_size=10, ask_size=7, underlying_price=100.0))  # fmt: skip
    return exp
