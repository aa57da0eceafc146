"""The ClientApp beside each device: it answers the ServerApp's two messages of a round
through the device's `edgetune serve` Unix socket (node config `socket`):

- `query`: `{"export": true}`, the statistics of the device's own labels, sent back
  as bytes (`fleet.state`);
- `train`: `{"merge": …}` with the sum of the other devices' labels the ServerApp sent
  (`fleet.merge`); the device applies it through its regression guard and writes it
  to its state directory before answering.
"""

import base64
import time

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .device import ask

app = ClientApp()


def _socket(context: Context) -> str:
    path = context.node_config.get("socket")
    if not path:
        raise ValueError('the SuperNode needs --node-config \'socket="/path/to/edgetune.sock"\'')
    return str(path)


@app.query()
def export(msg: Message, context: Context) -> Message:
    t = time.monotonic()
    answer = ask(_socket(context), {"export": True})
    state = base64.b64decode(answer["fleet"])
    content = RecordDict(
        {
            "fleet": ConfigRecord({"state": state}),
            "metrics": MetricRecord(
                {"labels": int(answer["labels"]), "bytes": len(state), "ms": 1e3 * (time.monotonic() - t)}
            ),
        }
    )
    return Message(content=content, reply_to=msg)


@app.train()
def merge(msg: Message, context: Context) -> Message:
    t = time.monotonic()
    state = msg.content["fleet"]["merge"]
    answer = ask(_socket(context), {"merge": base64.b64encode(state).decode()})
    metrics = {
        "merged": int(answer.get("result") == "merged"),
        "classes": len(answer.get("classes", [])),
        "bytes": len(state),
        "ms": 1e3 * (time.monotonic() - t),
    }
    content = RecordDict({"metrics": MetricRecord(metrics), "answer": ConfigRecord({"result": str(answer.get("result")), "message": str(answer.get("message", ""))})})
    return Message(content=content, reply_to=msg)
