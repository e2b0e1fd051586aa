"""Processes that do the work behind the gateway: embedding workers (one per model replica) and the writer."""
