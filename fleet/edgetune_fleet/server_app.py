"""The ServerApp: rounds of export and merge over the devices of the fleet.

Each round asks every connected device for the statistics of its own labels (`query`),
keeps the newest one per device (so a device that misses a round still counts with what
it sent last), and sends each device the exact sum of the *other* devices' labels
(`train`). Summing closed-form statistics is exact: after a round every device's head is
the one a single device would have from every label of the fleet. A state that does
not decode, or comes from another backbone or bundle, is refused (logged, and left out);
the round goes on without it.

With `signing-key` (run config: the path of an Ed25519 private key as `finetune-head
keygen` writes it, readable by its owner only) every state sent is signed, and devices
started with `--trust KEY.pub` apply only states signed so. Without it the states go
unsigned, which such devices refuse.

A device whose head learns by gradient steps (`--learner gradient`) exports
its head and its labels per class instead; those devices get the average of the *other*
such devices' heads (FedAvg: each class's output row weighted by the labels each device
has of it, the hidden layer by all its labels), which they mix with their own by the
same weights and rehearse their own samples after. A fleet may hold devices of both
kinds: each kind is summed apart and gets its own kind back.
"""

import json
import time
from logging import INFO, WARNING

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from .state import HeadState, HeadSum, InvalidState, Moments, decode, encode, load_signing_key

app = ServerApp()


def _wait_for_nodes(grid: Grid, least: int, wait: float) -> list[int]:
    deadline = time.monotonic() + wait
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= least or time.monotonic() > deadline:
            return nodes
        time.sleep(0.2)


def _replies(grid: Grid, messages: list[Message], timeout: float) -> dict[int, Message]:
    out = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            log(WARNING, "device %s: %s", node, reply.error.reason)
            continue
        out[node] = reply
    return out


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    rounds, timeout = int(cfg["rounds"]), float(cfg["round-timeout"])
    key = load_signing_key(str(cfg["signing-key"])) if cfg.get("signing-key") else None
    if key is None:
        log(WARNING, "fleet states go unsigned (no signing-key): devices with --trust refuse them")
    latest = {}  # node id -> its newest state (decoded)
    summary = []
    for r in range(1, rounds + 1):
        t0 = time.monotonic()
        nodes = _wait_for_nodes(grid, int(cfg["min-nodes"]) if r == 1 else 1, float(cfg["node-wait"]))
        asks = [Message(RecordDict({}), n, "query", group_id=str(r)) for n in nodes]
        exports = _replies(grid, asks, timeout)
        sent = {}
        for node, reply in exports.items():
            data = reply.content["fleet"]["state"]
            try:
                latest[node] = decode(data)
            except InvalidState as e:
                log(WARNING, "round %d: device %s sent a fleet state that is refused: %s", r, node, e)
                continue
            sent[node] = len(data)
        states = {n: s for n, s in latest.items() if s.labels > 0}
        # Statistics (False) and gradient heads (True) are summed apart.
        totals: dict[bool, Moments | HeadSum] = {}
        refused = []
        for node, s in states.items():
            kind = isinstance(s, HeadState)
            total = totals.get(kind) or (HeadSum(s) if kind else Moments(s))
            why = total.fits(s)
            if why:
                log(WARNING, "round %d: device %s's state is left out: %s", r, node, why)
                refused.append(node)
                continue
            total.add(s)
            totals[kind] = total
        for node in refused:
            del states[node]
        merges, received = [], {}
        for node in exports:
            if node not in latest:
                continue
            total = totals.get(isinstance(latest[node], HeadState))
            if total is None:
                continue
            others = total.minus(states[node]) if node in states else total
            state = others.state(latest[node].classes)
            if state is None:
                continue
            data = encode(state, key)
            received[node] = len(data)
            content = RecordDict({"fleet": ConfigRecord({"merge": data})})
            merges.append(Message(content, node, "train", group_id=str(r)))
        merged = _replies(grid, merges, timeout)
        results = {}
        for node, reply in merged.items():
            answer = reply.content["answer"]
            results[node] = answer["result"]
            if answer["result"] != "merged":
                log(WARNING, "round %d: device %s: %s", r, node, answer["message"])
        seconds = time.monotonic() - t0
        log(INFO, "round %d: %d devices exported, %d merged, in %.2f s", r, len(exports), len(results), seconds)
        summary.append(
            {
                "round": r,
                "nodes": [str(n) for n in nodes],
                "exported": {str(n): b for n, b in sent.items()},
                "merged": {str(n): v for n, v in results.items()},
                "sent_to": {str(n): b for n, b in received.items()},
                "labels": {str(n): s.labels for n, s in states.items()},
                "seconds": seconds,
            }
        )
        if cfg.get("summary-path"):
            with open(str(cfg["summary-path"]), "w") as f:
                json.dump(summary, f, indent=1)
