"""Executors decide where runs happen: `local` slots or a `ray` cluster."""
