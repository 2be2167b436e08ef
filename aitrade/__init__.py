"""Research-to-production notebook platform for an options-trading desk

Modules:

- `aitrade.archive`: Every executed production notebook, success or failure, stored write-once and content-addressed, with a hash-chained manifest that an auditor can verify offline.
- `aitrade.backtest`: A strategy proposes orders from the day's chains and model outputs; the orders go through the same pre-trade checks, limits, kill switch, fail-closed rules, approvals and paper broker as in production; out come the daily P&L, the Greeks and a summary (Sharpe, drawdown, turnover, hit rate) with plots.
- `aitrade.bus`: `publish(stream, message)` / `subscribe(stream, last_id)`: Redis Streams in production, a SQLite-WAL stream file on the embedded default; one API, works across the platform's processes.
- `aitrade.engine`: A papermill engine that executes notebooks on pre-started kernels from a small pool per process, each kernel replaced by a fresh one after every run so that no state leaks from one notebook to the next.
- `aitrade.errors`: One family of exceptions for the whole platform: each knows its HTTP status, its stable code and, for bad input, the field it is about. The API and the CLI render the same object.
- `aitrade.execution`: Orders move through a state machine with full history; a retried submission never creates a second order; large or manual orders wait for a second person; the paper broker fills at the quote with slippage, partial fills and commissions; positions and P&L are explained by the Greeks.
- `aitrade.jobs`: Pipeline definitions and their validation, typed parameters, the run history, the execution of a run's notebook DAG on Dask workers with retries, timeouts, cancellation, live logs and alerts, replay of archived runs, and the `aitrade jobs` CLI.
- `aitrade.limits`: Risk limits live in the database and change only through the risk role, audited; every order is checked as if filled against them; one switch stops all order flow; stale data or a failed calibration blocks new orders with the reason.
- `aitrade.marketdata`: Underlyings, prices and option chains: a synthetic market anchored to real history (the embedded default), file loaders with validation, a live feed onto the bus, and the tables the trading loop reads.
- `aitrade.migrations.versions.v0002_marketdata`: `underlyings`, `underlying_prices`, `option_quotes` and `vol_surfaces` (see `aitrade.marketdata` and `aitrade.surfaces`).
- `aitrade.migrations.versions.v0003_trading`: Risk limits, the kill switch, strategies, orders with their history, and fills (see `aitrade.limits` and `aitrade.execution`).
- `aitrade.pricing.heston`: European options under Heston (1993) stochastic volatility: a branch-safe characteristic function, the COS method for whole surfaces, the Lewis single integral as cross-check, and Levenberg-Marquardt calibration with the analytic gradient.
- `aitrade.pricing.montecarlo`: European options under Heston by simulation: the Quadratic-Exponential variance step with martingale correction, antithetic pairs, counter-based random numbers, numba on the CPU and the same estimator on CuPy.
- `aitrade.pricing.sabr`: Hagan et al. (2002) lognormal and normal SABR vols (with Obłój's 2008 correction and shifts for negative rates), numba on the CPU, the same algorithm in array code for CuPy, and a batched Levenberg–Marquardt calibration of (alpha, rho, nu) per expiry.
- `aitrade.risk`: Greeks per underlying and expiry bucket, a full-revaluation scenario grid, historical and Monte Carlo VaR / expected shortfall, and the metrics of the pre-trade check: pure array code, no database.
- `aitrade.scheduler`: `aitrade scheduler`: fires due pipeline runs from their cron schedules and exchange calendars, drives them on Dask under leases with heartbeats, takes over the runs of a crashed scheduler, and alerts on missed deadlines.
- `aitrade.surfaces`: Implied vol per quote, SABR per expiry, Heston per underlying; stored with status ok/failed, so that risk can refuse to trade an underlying whose surface did not fit.
- `aitrade.trading_cli`: `aitrade market load|show`, `aitrade risk report`, `aitrade orders list|submit|approve|reject|cancel`, `aitrade killswitch on|off|status` and `aitrade backtest`: thin typer commands over the same functions the jobs and the API call."""

__version__ = "0.1.0"
