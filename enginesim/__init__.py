"""A stand-in for a Dagger engine talking to a cache service (see docs/PROTOCOL in the brief).

Plain package, no Django: the management commands, tests and the load benchmark drive it.
"""
