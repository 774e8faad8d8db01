"""Tables: keyed state with durable local stores and changelogs (Faust's API, Arrow inside).

``app.Table``/``app.GlobalTable``/``app.SetTable``/``app.SetGlobalTable``
make them (``sabot.tables.table``); ``app.tables`` is their
``TableManager`` (recovery, flushes, the commit barrier); the stores are in
``sabot.tables.stores``, the changelogs in ``sabot.tables.changelog``,
recovery in ``sabot.tables.recovery``, the value in hand in
``sabot.tables.context``. See docs/tables.md.
"""
from .codec import TableValueError
from .context import CurrentEvent, current_event
from .manager import TableManager
from .recovery import RecoveryStats, TableRecoveryError
from .table import (ChangeloggedSet, Collection, GlobalTable, SetGlobalTable, SetTable, Table,
                    TableKeyError)

__all__ = ["Collection", "Table", "GlobalTable", "SetTable", "SetGlobalTable",
           "ChangeloggedSet", "TableManager", "CurrentEvent", "current_event",
           "TableKeyError", "TableValueError", "TableRecoveryError", "RecoveryStats"]
