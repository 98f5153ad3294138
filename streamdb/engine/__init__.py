"""The storage engine: `Engine` owns every mutable field of an open database (core.py has
its lifecycle); `streamdb.Database` is the façade over it."""

from streamdb.engine.core import Engine, Stats
from streamdb.engine.pins import State
from streamdb.engine.salvage import LogRecovery, LogRecoveryWarning
from streamdb.engine.writes import Transaction

__all__ = ["Engine", "LogRecovery", "LogRecoveryWarning", "State", "Stats", "Transaction"]
