"""What a server holds of one embedding table, fixed (table_shard.py) or dynamic (dynamic_shard.py).

Both answer the same requests (gather, apply, the checks of a request's ids and size) and write
their checkpoint entry, so the server, the consistency gates and the metrics serve either alike.
"""

from psjob_runtime.dynamic_shard import DynamicShard
from psjob_runtime.table_shard import TableShard

Shard = TableShard | DynamicShard
