"""Research-to-production notebook platform for an options-trading desk

Modules:

- `aitrade.archive`: Every executed production notebook, success or failure, stored write-once and content-addressed, with a hash-chained manifest that an auditor can verify offline.
- `aitrade.pricing.heston`: European options under Heston (1993) stochastic volatility: a branch-safe characteristic function, the COS method for whole surfaces, the Lewis single integral as cross-check, and Levenberg-Marquardt calibration with the analytic gradient.
- `aitrade.pricing.montecarlo`: European options under Heston by simulation: the Quadratic-Exponential variance step with martingale correction, antithetic pairs, counter-based random numbers, numba on the CPU and the same estimator on CuPy.
- `aitrade.pricing.sabr`: Hagan et al. (2002) lognormal and normal SABR vols (with Obłój's 2008 correction and shifts for negative rates), numba on the CPU, the same algorithm in array code for CuPy, and a batched Levenberg–Marquardt calibration of (alpha, rho, nu) per expiry.
- `aitrade.risk`: Greeks per underlying and expiry bucket, a full-revaluation scenario grid, historical and Monte Carlo VaR / expected shortfall, and the metrics of the pre-trade check: pure array code, no database."""

__version__ = "0.1.0"
