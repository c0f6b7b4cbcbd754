"""The worker side of machine calibration: a process that answers the parent over a Pipe.

It lives in its own small module so that ``spawn`` and ``forkserver`` children can import it by
name without importing anything heavy. The protocol (parent → worker, each answered in order)::

    any picklable object  ──►  the same object back             (ping, pipelined bursts)
    BLOB, then raw bytes  ──►  the number of bytes received     (bandwidth)
    STOP (or EOF)         ──►  the worker returns and exits
"""

from __future__ import annotations

from multiprocessing.connection import Connection

__all__ = ["BLOB", "STOP", "serve"]

#: Announces that the next message is a raw byte payload (``send_bytes``) to be counted.
BLOB = "__amorsize_blob__"
#: Asks the worker to return.
STOP = "__amorsize_stop__"


def serve(conn: Connection) -> None:
    """Answer the parent until it says STOP or closes its end of the pipe.

    Args:
        conn: the worker's end of a duplex ``multiprocessing.Pipe``.
    """
    try:
        while True:
            message = conn.recv()
            if message == STOP:
                return
            if message == BLOB:
                conn.send(len(conn.recv_bytes()))
            else:
                conn.send(message)
    except (EOFError, OSError):
        return  # the parent went away: nothing left to answer
    finally:
        conn.close()
