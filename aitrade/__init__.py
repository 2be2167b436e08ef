"""Research-to-production notebook platform for an options-trading desk

Modules:

- `aitrade.archive`: Every executed production notebook, success or failure, stored write-once and content-addressed, with a hash-chained manifest that an auditor can verify offline."""

__version__ = "0.1.0"
