"""The pure rules of the queue: records, ordering, time, leases, retries and scaling.

Nothing here imports Ray or reads a clock; every time-dependent call takes ``now``.
"""
