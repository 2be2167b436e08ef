"""The trading commands end to end on SQLite and PostgreSQL: market load (file and synthetic, rejected rows
with reasons) and show, orders with the four-eyes rule, the kill switch, the risk report, the backtest, exit
codes (0 ok, 1 refused, 2 bad input) and --help on every command."""

import json

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from aitrade import config, marketdata, rates, store
from aitrade.cli import trading


@pytest.fixture
def app():
    a = typer.Typer()

    @a.callback()
    def _startup():  # as aitrade.cli does: settings are read before any command
        config.reload_settings()

    a.add_typer(trading.market_app, name="market")
    a.add_typer(trading.risk_app, name="risk")
    a.add_typer(trading.orders_app, name="orders")
    a.add_typer(trading.killswitch_app, name="killswitch")
    a.command("backtest")(trading.backtest_cmd)
    return a


@pytest.fixture
def cli(app):
    def run(*args, env=None):
        return CliRunner().invoke(app, [str(x) for x in args], env=env)

    return run


@pytest.fixture
def trading_db(db, monkeypatch):
    "The test database with the historical synthetic data treated as fresh and a low approval threshold."
    monkeypatch.setenv("AITRADE_RISK__MAX_DATA_AGE_SECONDS", str(10**10))
    monkeypatch.setenv("AITRADE_RISK__APPROVAL_NOTIONAL", "10000")
    config.reload_settings()
    return db


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))


def test_every_command_has_help(app, cli):
    cmds = list(_commands(typer.main.get_command(app)))
    assert {("market", "load"), ("market", "show"), ("risk", "report"), ("orders", "list"), ("orders", "submit"),
            ("orders", "approve"), ("orders", "reject"), ("orders", "cancel"), ("killswitch", "on"),
            ("killswitch", "off"), ("killswitch", "status"), ("backtest",)} <= set(cmds)  # fmt: skip
    for c in cmds:
        r = cli(*c, "--help")
        assert r.exit_code == 0 and "Usage:" in r.output, (c, r.output)


def test_market_load_synthetic_prints_rejected_rows_and_show(trading_db, cli):
    r = cli("market", "load", "--synthetic", "--date", "2012-03-01", "-s", "SPX,AAPL", "--history-days", "20")
    assert r.exit_code == 0, r.output
    bad = marketdata.validate_chain(marketdata.SyntheticMarket(seed=0).chain("SPX", "2012-03-01")).rejected
    assert len(bad) > 0
    for row, why in zip(bad["row"], bad["reason"], strict=True):
        assert f"row {row} (SPX): {why}" in r.output
    assert "SPX 2012-03-01:" in r.output and "AAPL 2012-03-01:" in r.output and "surface ok" in r.output
    with store.session_scope() as s:
        assert len(marketdata.prices(s, "SPX")) == 21
        assert len(marketdata.chain(s, "AAPL", "2012-03-01")) > 300
        stored = rates.curve(s, "2012-03-01")  # the curve the synthetic chains were priced at
        want = marketdata.SyntheticMarket(seed=0).curve("2012-03-01")
        np.testing.assert_array_equal(stored.tenors, want.tenors)
        np.testing.assert_allclose(stored.rates, want.rates, rtol=0, atol=1e-15)
    r = cli("market", "show", "AAPL", "--date", "2012-03-01", "--json")
    assert r.exit_code == 0, r.output
    js = json.loads(r.output)
    assert js["surface"]["status"] == "ok" and js["quotes"] > 300 and len(js["expiries"]) >= 8
    r = cli("market", "show", "MSFT", "--date", "2012-03-01")
    assert r.exit_code == 1 and "no quotes and no surface for MSFT" in r.output


def test_market_load_file_loads_good_rows_and_lists_bad_ones(trading_db, cli, tmp_path):
    ch = marketdata.validate_chain(marketdata.SyntheticMarket(seed=1).chain("IBM", "2012-06-01")).good.head(
        40
    )
    f = marketdata.to_file_layout(ch)
    f.loc[3, "bid_eod"] = f.loc[3, "ask_eod"] + 1.0  # crossed
    f.loc[7, "strike"] = -5  # bad strike
    f.loc[9, "expiration"] = "2012-05-01"  # expired
    p = tmp_path / "quotes.csv"
    f.to_csv(p, index=False)
    r = cli("market", "load", p, "--no-calibrate")
    assert r.exit_code == 0, r.output
    assert "rejected 3 rows:" in r.output
    assert "row 3 (IBM): crossed market: bid_eod > ask_eod" in r.output
    assert "row 7 (IBM): strike: must be > 0" in r.output
    assert "row 9 (IBM): expiration: before quote_date" in r.output
    assert "loaded 37 quotes, rejected 3 rows" in r.output
    f["bid_eod"] = 0.0
    f.to_csv(p, index=False)
    r = cli("market", "load", p)
    assert r.exit_code == 1 and "nothing loaded" in r.output


@pytest.mark.parametrize(
    "args, msg",
    [
        (("market", "load"), "file: give a quotes FILE or --synthetic"),
        (("market", "load", "--synthetic"), "date: required"),
        (("market", "load", "--synthetic", "--date", "2015-03-07", "-s", "SPX"), "date: 2015-03-07 is not a trading day"),
        (("market", "load", "--synthetic", "--date", "2015-03-02", "-s", "XYZ"), "symbols: unknown synthetic underlying"),
        (("market", "load", "nope.csv"), "file: nope.csv does not exist"),
        (("market", "show", "SPX", "--date", "someday"), "date: not a date"),
        (("orders", "list"), "user: give --user NAME or set AITRADE_USER"),
        (("orders", "list", "-u", "tom", "-r", "wizard"), "unknown ['wizard']"),
        (("orders", "submit", "--symbol", "SPX", "--side", "hold", "--quantity", "1", "-u", "t", "-r", "trader"),
         "order side: must be 'buy' or 'sell'"),
        (("orders", "submit", "--symbol", "SPX", "--side", "buy", "--quantity", "1", "--type", "C", "-u", "t",
          "-r", "trader"), "order expiry: an option needs an expiry date"),
        (("orders", "approve", "999", "--reason", "x", "-u", "rita", "-r", "risk"), "order 999: no such order"),
        (("backtest", "--strategy", "carry", "--start", "2015-03-02", "--end", "2015-03-03", "-s", "SPX"),
         "strategy: unknown 'carry'"),
        (("risk", "report", "--as-of", "soon", "-u", "rita", "-r", "risk"), "as_of: not a date"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_naming_the_field(trading_db, cli, args, msg):
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert msg in r.output


def _load_spx(cli, history_days: int, *more: str) -> None:
    "Load the synthetic SPX market of 2015-03-02 with `history_days` of closes through the CLI."
    day = ("--date", "2015-03-02", "-s", "SPX", "--history-days", str(history_days))
    r = cli("market", "load", "--synthetic", *day, *more)
    assert r.exit_code == 0, r.output


def test_four_eyes_through_the_cli_and_identity_from_the_environment(trading_db, cli):
    _load_spx(cli, 30)
    tom = {"AITRADE_USER": "tom", "AITRADE_ROLES": "trader"}
    r = cli("orders", "submit", "--symbol", "SPX", "--side", "buy", "--quantity", "10", "--client-order-id", "t-1",
            env=tom)  # fmt: skip
    assert r.exit_code == 0 and "pending_approval" in r.output and "notional" in r.output, r.output
    oid = r.output.split()[1]
    r = cli("orders", "approve", oid, "--reason", "looks fine", env=tom)
    assert r.exit_code == 1 and "tom submitted order" in r.output and "four eyes" in r.output
    r = cli("orders", "approve", oid, "--reason", "mine", "-u", "tom", "-r", "risk")  # flags win; still tom
    assert r.exit_code == 1 and "four eyes" in r.output
    r = cli("orders", "approve", oid, "--reason", "ok", "-u", "mia", "-r", "manager")  # no approve right
    assert r.exit_code == 1 and "lacks the right 'orders:approve'" in r.output
    r = cli("orders", "approve", oid, "--reason", "checked", "-u", "rita", "-r", "risk")
    assert r.exit_code == 0 and f"order {oid} [t-1] buy 10 SPX: filled filled 10" in r.output, r.output
    # the same client order id again: the same order, no second one
    r = cli("orders", "submit", "--symbol", "SPX", "--side", "buy", "--quantity", "10", "--client-order-id", "t-1",
            env=tom)  # fmt: skip
    assert r.exit_code == 0 and f"order {oid} [t-1]" in r.output
    # a second order, rejected by its approver
    r = cli("orders", "submit", "--symbol", "SPX", "--side", "sell", "--quantity", "20", env=tom)
    oid2 = r.output.split()[1]
    r = cli("orders", "reject", oid2, "--reason", "too big", "-u", "rita", "-r", "risk")
    assert r.exit_code == 0 and "rejected (too big)" in r.output
    r = cli("orders", "cancel", oid2, "--reason", "late", env=tom)
    assert r.exit_code == 1 and "cannot move to cancelled" in r.output
    r = cli("orders", "list", "--json", env=tom)
    rows = [json.loads(x) for x in r.output.splitlines()]
    assert [(x["id"], x["state"], x["approved_by"]) for x in rows] == [(int(oid), "filled", "rita"),
                                                                        (int(oid2), "rejected", None)]  # fmt: skip
    r = cli("orders", "list", "--state", "filled", env=tom)
    assert r.exit_code == 0 and len(r.output.splitlines()) == 1
    # a small order is auto-approved and filled; cancel of a final order is refused
    r = cli("orders", "submit", "--symbol", "SPX", "--side", "sell", "--quantity", "2", env=tom)
    assert r.exit_code == 0 and ": filled" in r.output


def test_kill_switch_through_the_cli(trading_db, cli):
    _load_spx(cli, 0, "--no-calibrate")
    r = cli("killswitch", "status")
    assert r.exit_code == 0 and "released" in r.output
    assert cli("killswitch", "on", "--reason", "drill", "-u", "rita", "-r", "manager").exit_code == 1
    r = cli("killswitch", "on", "--reason", "bad feed", "-u", "tom", "-r", "trader")
    assert r.exit_code == 0 and "ENGAGED by tom" in r.output
    r = cli(
        "orders", "submit", "--symbol", "SPX", "--side", "buy", "--quantity", "1", "-u", "tom", "-r", "trader"
    )
    assert r.exit_code == 1 and "rejected (kill switch engaged by tom: bad feed)" in r.output
    r = cli("killswitch", "off", "--reason", "fixed", "-u", "tom", "-r", "trader")
    assert r.exit_code == 1 and "lacks the right 'killswitch:release'" in r.output
    js = json.loads(cli("killswitch", "status", "--json").output)
    assert js["engaged"] is True and js["changed_by"] == "tom"
    r = cli("killswitch", "off", "--reason", "feed fixed", "-u", "rita", "-r", "risk")
    assert r.exit_code == 0 and "released by rita" in r.output
    r = cli(
        "orders", "submit", "--symbol", "SPX", "--side", "buy", "--quantity", "1", "-u", "tom", "-r", "trader"
    )
    assert r.exit_code == 0 and ": filled" in r.output


def test_risk_report_greeks_scenarios_var_and_limits(trading_db, cli):
    _load_spx(cli, 60)
    with store.session_scope() as s:
        ch = marketdata.chain(s, "SPX", "2015-03-02")
    atm = ch[(ch["option_type"] == "C")].iloc[
        (ch.loc[ch["option_type"] == "C", "strike"] - 2117).abs().argmin()
    ]
    exp = pd.Timestamp(atm["expiry"]).date()
    tom = ["-u", "tom", "-r", "trader"]
    r = cli("orders", "submit", "--symbol", "SPX", "--side", "sell", "--quantity", "1", "--type", "C",
            "--expiry", exp, "--strike", atm["strike"], *tom)  # fmt: skip
    # historical quotes: the order is valued at `now`, after the option's expiry, so it cannot be valued
    assert r.exit_code == 1 and "fail closed" in r.output, r.output
    r = cli("orders", "submit", "--symbol", "SPX", "--side", "buy", "--quantity", "3", *tom)
    assert r.exit_code == 0, r.output
    from aitrade import limits
    from aitrade.auth import Principal

    with store.session_scope() as s:
        limits.set_limit(s, Principal.with_roles("rita", ["risk"]), "SPX", "delta", 10_000.0, "desk")
    r = cli("risk", "report", "--json", "-u", "rita", "-r", "risk")
    assert r.exit_code == 0, r.output
    js = json.loads(r.output)
    spot = js["greeks_by_symbol"][0]["spot"]
    assert js["greeks_by_symbol"][0]["delta"] == pytest.approx(3.0)
    assert js["greeks_by_symbol"][0]["delta_ccy"] == pytest.approx(3 * spot)
    assert len(js["scenarios"]) == 7 and js["var"]["historical"]["scenarios"] == 60
    assert js["var"]["historical"]["var"] > 0 and js["var"]["monte_carlo"]["var"] > 0
    (lim,) = js["limits"]
    assert lim["scope"] == "SPX" and lim["usage"] == pytest.approx(3 * spot)
    assert lim["utilisation"] == pytest.approx(3 * spot / 10_000)
    r = cli("risk", "report", "-u", "rita", "-r", "risk")
    assert r.exit_code == 0 and "Limits vs usage" in r.output and "VaR/ES at 99.0%" in r.output
    r = cli("risk", "report", "--as-of", "2000-01-03", "-u", "rita", "-r", "risk")
    assert r.exit_code == 0 and "no open positions" in r.output
    assert cli("risk", "report", "-u", "al", "-r", "ops").exit_code == 0  # ops reads risk
    assert cli("risk", "report", "-u", "x", "-r", "quant").exit_code == 0


def test_backtest_command_writes_results(cli, tmp_path):
    out = tmp_path / "bt"
    r = cli("backtest", "--strategy", "short_vol", "--start", "2015-03-02", "--end", "2015-03-04",
            "--symbols", "SPX", "--seed", "1", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (
        "backtest short_vol on SPX, 2015-03-02 .. 2015-03-04 (3 days, seed 1" in r.output
        and "sharpe" in r.output
    )
    summary = json.loads((out / "summary.json").read_text())
    daily = pd.read_csv(out / "daily.csv")
    assert summary["summary"]["total_pnl"] == pytest.approx(daily["total"].sum())
    assert (out / "pnl.png").stat().st_size > 1000 and (out / "greeks.png").stat().st_size > 1000
    r = cli("backtest", "--strategy", "rich_cheap", "--start", "2012-03-01", "--end", "2012-03-02", "-s", "AAPL",
            "--json")  # fmt: skip
    assert r.exit_code == 0 and json.loads(r.output)["summary"]["days"] == 2


def test_market_rates_stores_a_curve_file_whole_or_not_at_all(trading_db, cli, tmp_path):
    f = tmp_path / "curves.csv"
    f.write_text("date,tenor,rate\n2026-12-04,0.25,0.041\n2026-12-04,2,0.038\n2026-12-04,10,0.042\n")
    r = cli("market", "rates", str(f))
    assert r.exit_code == 0 and "2026-12-04: 3 tenors, zero rates 3.8000% to 4.2000% (curves.csv)" in r.output
    with store.session_scope() as s:
        cv = rates.curve(s, "2026-12-07")  # the newest curve on or before the day
        assert cv.as_of.date().isoformat() == "2026-12-04" and cv.zero(2.0) == 0.038
    bad = tmp_path / "bad.csv"
    bad.write_text("date,tenor,rate\n2026-12-07,1,0.04\n2026-12-07,5,4.1\n")
    r = cli("market", "rates", str(bad))
    assert r.exit_code == 2 and "line 3: rate: 4.1 is not a decimal rate" in r.output, r.output
    with store.session_scope() as s:
        assert (
            rates.curve(s, "2026-12-07").as_of.date().isoformat() == "2026-12-04"
        )  # nothing of bad.csv stored


#: the state-changing trading commands and the right each needs
CLI_RIGHTS = {
    ("orders", "submit"): "orders:submit",
    ("orders", "approve"): "orders:approve",
    ("orders", "reject"): "orders:approve",
    ("orders", "cancel"): "orders:cancel",
    ("killswitch", "on"): "killswitch:engage",
    ("killswitch", "off"): "killswitch:release",
}


def test_role_by_command_matrix_has_no_unexpected_allow_or_refusal(trading_db, cli):
    "Every role against every state-changing trading command (as the platform's account acting for a person)."
    from aitrade.auth import ROLES

    _load_spx(cli, 0, "--no-calibrate")
    submit = ("orders", "submit", "--symbol", "SPX", "--side", "buy", "--quantity", "10")
    wrong = []
    for role in ROLES:
        who = ("-u", f"{role}-person", "-r", role)
        for cmd, right in CLI_RIGHTS.items():
            if cmd == ("orders", "submit"):
                args = (*submit, *who)
            elif cmd[0] == "orders":  # someone else's order, waiting for approval (notional over 10,000)
                r = cli(*submit, "-u", "sam", "-r", "trader")
                assert r.exit_code == 0 and "pending_approval" in r.output, r.output
                args = (*cmd, r.output.split()[1], "--reason", "matrix", *who)
            else:
                if cmd == ("killswitch", "off"):
                    assert (
                        cli("killswitch", "on", "--reason", "matrix", "-u", "rita", "-r", "risk").exit_code
                        == 0
                    )
                args = (*cmd, "--reason", "matrix", *who)
            r = cli(*args)
            if (r.exit_code == 0) != (right in ROLES[role]):
                wrong.append((role, " ".join(cmd), r.exit_code, r.output.strip()[-120:]))
            if r.exit_code != 0:
                assert r.exit_code == 1 and f"lacks the right '{right}'" in r.output, (role, cmd, r.output)
            cli("killswitch", "off", "--reason", "reset", "-u", "rita", "-r", "risk")
    assert wrong == []
