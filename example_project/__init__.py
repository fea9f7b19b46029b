"""The example pipeline a newcomer runs: `make demo` headless, `make dev` in the Dagster UI."""
