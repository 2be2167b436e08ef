"""Operations: backups and restores, retention and legal holds (one module per concern)."""
