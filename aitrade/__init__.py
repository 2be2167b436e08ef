"""Research-to-production notebook platform for an options-trading desk

Modules:

- `aitrade.api.edges`: What the API refuses before any route runs: a body larger than it will read (413), a token that asks too often (429 with `Retry-After`), and the headers every answer carries so a browser never sniffs, frames or leaks it.
- `aitrade.api.registry`: List models and their versions with lineage, register a version, move a plain alias, request, approve and reject a promotion to production, roll back.
- `aitrade.archive.manifest`: What the archive records about each executed notebook: its manifest (environment, inputs, git state, kernel), the names and the clock it checks against, and the errors it raises.
- `aitrade.archive.retention`: A run under legal hold cannot be deleted; a run is deleted only after its retention, leaving its manifest and chain entry.
- `aitrade.archive.store`: Content-addressed objects written once, a chain of manifests, `archive_run` and reading back with `show` and `list`.
- `aitrade.archive.verify`: Every address and link of the chain checked, bundles against their index, and the chain anchored in the audit log.
- `aitrade.backtest`: A strategy proposes orders from the day's chains and model outputs; the orders go through the same pre-trade checks, limits, kill switch, fail-closed rules, approvals and paper broker as in production; out come the daily P&L, the Greeks and a summary (Sharpe, drawdown, turnover, hit rate) with plots.
- `aitrade.bus`: `publish(stream, message)` / `subscribe(stream, last_id)`: Redis Streams in production, a SQLite-WAL stream file on the embedded default; one API, works across the platform's processes.
- `aitrade.chains`: The chain schema every part of the platform reads, its row-by-row validation with a reason per rejected row, and the CBOE end-of-day file layout: parse, load, write.
- `aitrade.cli.jobs`: List pipelines and runs, run a pipeline in the foreground, watch its status and log, cancel and retry; start the scheduler daemon.
- `aitrade.cli.models`: `aitrade models`: list models and versions, register a version from files, move a plain alias, request, approve, reject and withdraw promotions, roll back, verify and export.
- `aitrade.cli.trading`: `aitrade market load|show`, `aitrade risk report`, `aitrade orders list|submit|approve|reject|cancel`, `aitrade killswitch on|off|status` and `aitrade backtest`: thin typer commands over the same functions the jobs and the API call.
- `aitrade.client`: `aitrade.client.Client`: the platform's data for a person, through the API with their own token: market data, surfaces and their calibrations, risk, orders, runs and models as pandas frames.
- `aitrade.clock`: The exchange calendar and the one time to expiry of the platform: ACT/365 years to the exchange's session close on the expiry day, counted on the exchange's own clock.
- `aitrade.dashboards.signals`: What the signal layer did today, for quants, traders and risk: the lead/lag graph between the underlyings, the models in the registry with their production and candidate versions, and the promotions waiting for a second person.
- `aitrade.desk`: One service consumes the ticks, marks the open positions to market and publishes what the desk watches (P&L and its attribution, Greeks, limits, the kill switch, order and job events) on named bus streams; every viewer subscribes, nobody polls the database per viewer.
- `aitrade.engine`: A papermill engine that executes notebooks on pre-started kernels from a small pool per process, each kernel replaced by a fresh one after every run so that no state leaks from one notebook to the next.
- `aitrade.errors`: One family of exceptions for the whole platform: each knows its HTTP status, its stable code and, for bad input, the field it is about. The API and the CLI render the same object.
- `aitrade.execution.accounting`: Positions and P&L from the fills (average cost), the P&L of each day, the book as a `risk.Portfolio` for the pre-trade check, and the Greeks' explanation of a day's P&L.
- `aitrade.execution.broker`: The seam for a venue (`BrokerAdapter`), the paper broker that fills at the quote with slippage, partial fills and commissions, and the recording of fills, published to the bus once they commit.
- `aitrade.execution.model`: The trading tables (strategies, orders, their history, fills), the order states and their legal moves, the errors of the order flow, what a client sends (`OrderRequest`) and the quotes the flow prices against.
- `aitrade.execution.orders`: Orders move through a state machine with full history; a retried submission never creates a second order; large or manual orders wait for a second person.
- `aitrade.features`: Point-in-time features per underlying and day: declared, versioned definitions in a content-hashed `FeatureSet`, built strictly causally from the store, checked for look-ahead, and stored per set and day.
- `aitrade.features_drift`: Drift of each feature against its training window: the population stability index on the reference window's quantile bins and the two-sample Kolmogorov–Smirnov test, an audited alert through the jobs' webhooks when the PSI passes its threshold, and a figure for the dashboard.
- `aitrade.jobs.driver`: The notebook task that runs on a Dask worker, the driver that moves a run through its DAG with retries, timeouts, cancellation and alerts, and the Dask cluster it runs on.
- `aitrade.jobs.runs`: The tables of runs, their notebooks and logs; creating a run; the lease a driver holds on it; a run's status and log; cancel and retry.
- `aitrade.jobs.spec`: What a production pipeline is: a DAG of notebooks with typed parameters, a schedule, retries, timeouts, concurrency and alert targets, read and validated from `jobs/pipelines.yaml`.
- `aitrade.limits`: Risk limits live in the database and change only through the risk role, audited; every order is checked as if filled against them; one switch stops all order flow; stale data or a failed calibration blocks new orders with the reason.
- `aitrade.marketclock`: Today's XNYS session replays a historical day of the synthetic market in real time: the replay mapping, the replayed market re-dated to today, and the feed that publishes its ticks on the bus during session hours.
- `aitrade.marketdata`: Underlyings, prices and option chains: a synthetic market anchored to real history (the embedded default), file loaders with validation, a live feed onto the bus, and the tables the trading loop reads.
- `aitrade.migrations.versions.v0002_marketdata`: `underlyings`, `underlying_prices`, `option_quotes` and `vol_surfaces` (see `aitrade.marketdata` and `aitrade.surfaces`).
- `aitrade.migrations.versions.v0003_trading`: Risk limits, the kill switch, strategies, orders with their history, and fills (see `aitrade.limits` and `aitrade.execution`).
- `aitrade.migrations.versions.v0006_features`: `feature_sets`: one row per feature set, keyed by its content hash, with the canonical definitions it was hashed from; `feature_values`: the features of a set per day and underlying, long format (see `aitrade.features`).
- `aitrade.migrations.versions.v0008_registry`: `models`, `model_versions`, `model_aliases`, `model_alias_events` and `model_promotions`: named models, their immutable versions with lineage, the aliases that point at them, the history of every alias move, and the promotion requests a second person decides (see `aitrade.registry`).
- `aitrade.performance`: Summary statistics of a daily P&L series (Sharpe ratio, maximum drawdown, turnover, hit rate) and the figures of a backtest (P&L with drawdown, the book's Greeks over time).
- `aitrade.pricing.heston`: European options under Heston (1993) stochastic volatility: a branch-safe characteristic function, the COS method for whole surfaces, the Lewis single integral as cross-check, and Levenberg-Marquardt calibration with the analytic gradient.
- `aitrade.pricing.montecarlo`: European options under Heston by simulation: the Quadratic-Exponential variance step with martingale correction, antithetic pairs, counter-based random numbers, numba on the CPU and the same estimator on CuPy.
- `aitrade.pricing.normal`: The standard normal density, CDF and Mills ratio as numba kernels that vectorise, shared by every pricing and risk kernel of the platform; with the `exp` and `log` they are built from.
- `aitrade.pricing.sabr`: Hagan et al. (2002) lognormal and normal SABR vols (with Obłój's 2008 correction and shifts for negative rates), numba on the CPU, the same algorithm in array code for CuPy, and a batched Levenberg–Marquardt calibration of (alpha, rho, nu) per expiry.
- `aitrade.rates`: Dated zero curves: continuously compounded zero rates by tenor, read between tenors log-linearly in the discount factor; stored per day, loaded from files, and a documented default for the embedded market.
- `aitrade.registry`: Immutable model versions with their lineage, aliases that point at them, promotion to production only after a second person approves, rollback, every step audited.
- `aitrade.risk.book`: Positions and market as structs of arrays, their sort into (underlying, expiry bucket) blocks, and the fused kernel that values a book under any set of spot and vol shocks: the core of `aitrade.risk`.
- `aitrade.risk.greeks`: Greeks per underlying and expiry bucket from one pass of the fused kernel, and per position with the quant core: the table behind a drill-down and the reasons a row is NaN.
- `aitrade.risk.scenarios`: A full-revaluation grid of spot and vol shocks per underlying, the Greeks and the grid from one pass (`risk_report`), and the metrics the pre-trade limit check reads.
- `aitrade.risk.var`: Historical and Monte Carlo VaR / ES of a book, full revaluation or delta-gamma-vega, from the kernel of `aitrade.risk.book`.
- `aitrade.scheduler`: `aitrade scheduler`: fires due pipeline runs from their cron schedules and exchange calendars, drives them on Dask under leases with heartbeats, takes over the runs of a crashed scheduler, and alerts on missed deadlines.
- `aitrade.signals.ensemble`: Purged walk-forward folds, simple baseline forecasters, and three ways to combine them: non-negative stacking, rank averaging and sign voting, each fitted only on out-of-fold predictions.
- `aitrade.signals.evaluation`: Out-of-sample metrics with block-bootstrap intervals, a Diebold–Mariano test against the benchmark, and a dev/holdout split fixed in advance.
- `aitrade.signals.leadlag`: A dated graph of which underlyings' returns lead which, and by how many days: significant transfer entropy after false-discovery-rate control, pruned of indirect edges, computed in-process or on a Dask cluster, and stored one graph per day and method.
- `aitrade.signals.te`: Who leads whom: transfer entropy between return series by a discrete plug-in estimator (bit for bit PyInform's), a Gaussian closed form and the Kraskov–Stögbauer–Grassberger nearest-neighbour estimator; significance by circularly shifted surrogates and false-discovery-rate control.
- `aitrade.surfaces`: Implied vol per quote, SABR per expiry, Heston per underlying; stored with status ok/failed, so that risk can refuse to trade an underlying whose surface did not fit."""

__version__ = "0.1.0"
