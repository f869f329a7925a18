"""moto's server, with its DynamoDB made safe for concurrent transactions.

moto (5.2.5) runs each request in its own thread, and TransactWriteItems rolls a cancelled
transaction back by putting back a copy of the *whole table* taken before it started: any write
another request made meanwhile is lost (seen as a slot given back, then held again, under load).
Here every DynamoDB operation of the backend takes one lock, so a transaction and its rollback
see no concurrent writes. DynamoDB itself has no such problem; this only makes the stand-in true.

`python -m infra.local_stack.moto_server -H 127.0.0.1 -p PORT`, with moto.server's arguments.
"""
from __future__ import annotations

import functools
import inspect
import threading

from moto.dynamodb.models import DynamoDBBackend

_LOCK = threading.RLock()


def _serialised(method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with _LOCK:
            return method(*args, **kwargs)
    return locked


for _name, _method in inspect.getmembers(DynamoDBBackend, inspect.isfunction):
    if not _name.startswith("_"):
        setattr(DynamoDBBackend, _name, _serialised(_method))


if __name__ == "__main__":
    from moto.server import main

    main()
