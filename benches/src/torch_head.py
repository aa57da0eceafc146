"""PyTorch's side of `cargo run --release -p benches --bin compare` (see benches/src/torch.rs).

The same head workloads as edgetune's (benches/src/heads.rs), on the CPU, timed here so
that the pipe to the Rust process is not in the times. One JSON request per line on
stdin, one JSON answer per line on stdout ({"error": "..."} when a request fails):

  {"op": "hello", "threads": N}        -> {"torch": version, "threads": n}
  {"op": "setup", "name", "kind": "predict"|"step", "input": D, "hidden": H (0: linear),
   "classes": C, "optimizer": "adam"|"adamw"|"sgd-momentum", "lr",
   "xs": [[D floats], ...], "calls": [{"x": [input indices], "y": [labels]}, ...]}
                                        -> {"ok": true}
  {"op": "check", "name", "params": [edgetune's head parameters, in its order]}
       makes them the model's starting weights, then runs the first call once with a
       fresh optimizer:                 -> {"params": [after the step], "loss"} (step)
                                           {"probs": [...]} (predict)
  {"op": "calibrate", "name", "warm_ns", "target_ns"}
       warms the case up, then sizes a sample at about target_ns -> {"inner": k}
  {"op": "run", "name", "samples": n}  -> {"ns": [n times per call, in ns]}

edgetune's parameter order is PyTorch's `model.parameters()` order with each tensor
row-major: linear [W (C×D), b (C)]; MLP [W1 (H×D), b1 (H), W2 (C×H), b2 (C)].
As on edgetune's side, every timed sample of a step case starts (untimed) from the
starting weights with a fresh optimizer, and warm-up restarts every 10 calls: a step's
cost depends on its state (Adam moments that decay into subnormal floats are slow).
As in `timeit`, the garbage collector is off while a sample is timed.
"""

import gc
import json
import math
import sys
import time


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # reported to the Rust side, which skips PyTorch
        reply({"error": f"import torch: {type(e).__name__}: {e}"})
        return

    class Case:
        def __init__(self, spec):
            d, h, c = spec["input"], spec["hidden"], spec["classes"]
            torch.manual_seed(0)
            if h == 0:
                self.model = torch.nn.Linear(d, c)
            else:
                self.model = torch.nn.Sequential(
                    torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, c)
                )
            self.kind = spec["kind"]
            self.optimizer = spec["optimizer"]
            self.lr = spec["lr"]
            self.log_classes = math.log(c)
            xs = torch.tensor(spec["xs"], dtype=torch.float32)
            # Each call's input as edgetune gets it: [1, D] for one sample, [B, D] for
            # a batch; built once, outside the timed code.
            self.calls = [
                (
                    xs[torch.tensor(call["x"], dtype=torch.int64)].contiguous(),
                    torch.tensor(call["y"], dtype=torch.int64),
                )
                for call in spec["calls"]
            ]
            self.next = 0
            self.inner = 1
            self.opt = self.new_optimizer()
            self.keep_start()

        def keep_start(self):
            """The current weights become those every sample starts from."""
            with torch.no_grad():
                self.start = [p.detach().clone() for p in self.model.parameters()]

        def restart(self):
            """The starting weights, a fresh optimizer, the first call."""
            with torch.no_grad():
                for p, s in zip(self.model.parameters(), self.start):
                    p.copy_(s)
            self.opt = self.new_optimizer()
            self.next = 0

        def new_optimizer(self):
            params = self.model.parameters()
            if self.optimizer == "adam":
                return torch.optim.Adam(params, lr=self.lr)
            if self.optimizer == "adamw":
                # edgetune's AdamW has no decay unless configured; PyTorch's default is 0.01.
                return torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)
            if self.optimizer == "sgd-momentum":
                return torch.optim.SGD(params, lr=self.lr, momentum=0.9)
            raise ValueError(f"unknown optimizer {self.optimizer!r}")

        def call(self):
            x, y = self.calls[self.next % len(self.calls)]
            self.next += 1
            if self.kind == "predict":
                with torch.inference_mode():
                    probs = torch.softmax(self.model(x), dim=1)[0]
                    top = torch.topk(probs, 3)
                    entropy = -(probs * torch.log(probs)).sum() / self.log_classes
                    # What edgetune's Prediction holds, as Python numbers.
                    return (
                        int(top.indices[0]),
                        float(top.values[0]),
                        float(top.values[0] - top.values[1]),
                        float(entropy),
                    ), probs
            self.opt.zero_grad()
            loss = F.cross_entropy(self.model(x), y)
            loss.backward()
            self.opt.step()
            return loss.item(), None

        def flat_params(self):
            with torch.no_grad():
                return torch.cat([p.reshape(-1) for p in self.model.parameters()]).tolist()

        def set_params(self, flat):
            flat = torch.tensor(flat, dtype=torch.float32)
            params = list(self.model.parameters())
            total = sum(p.numel() for p in params)
            if flat.numel() != total:
                raise ValueError(f"{flat.numel()} parameters given, the model has {total}")
            with torch.no_grad():
                at = 0
                for p in params:
                    n = p.numel()
                    p.copy_(flat[at : at + n].reshape(p.shape))
                    at += n

        def sample(self, n):
            out = []
            for _ in range(n):
                if self.kind == "step":
                    self.restart()
                gc_was = gc.isenabled()
                gc.disable()
                t = time.perf_counter_ns()
                for _ in range(self.inner):
                    self.call()
                t = time.perf_counter_ns() - t
                if gc_was:
                    gc.enable()
                out.append(t / self.inner)
            return out

    cases = {}

    def handle(req):
        op = req.get("op")
        if op == "hello":
            torch.set_num_threads(int(req["threads"]))
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass  # only settable before the first parallel work
            return {"torch": torch.__version__, "threads": torch.get_num_threads()}
        if op == "setup":
            cases[req["name"]] = Case(req)
            return {"ok": True}
        if op not in ("check", "calibrate", "run"):
            raise ValueError(f"unknown op {op!r}")
        case = cases.get(req.get("name"))
        if case is None:
            raise KeyError(f"no case named {req.get('name')!r} was set up")
        if op == "check":
            case.set_params(req["params"])
            case.keep_start()
            case.restart()
            value, probs = case.call()
            if case.kind == "predict":
                return {"probs": probs.tolist()}
            return {"loss": value, "params": case.flat_params()}
        if op == "calibrate":
            spent = calls = 0
            while calls < 3 or spent < req["warm_ns"]:
                if case.kind == "step" and calls % 10 == 0:
                    case.restart()
                t = time.perf_counter_ns()
                case.call()
                spent += time.perf_counter_ns() - t
                calls += 1
            per_call = spent / calls
            case.inner = max(1, math.ceil(req["target_ns"] / per_call))
            return {"inner": case.inner}
        return {"ns": case.sample(int(req["samples"]))}  # op == "run"

    while True:
        line = sys.stdin.readline()
        if not line:
            return
        try:
            reply(handle(json.loads(line)))
        except Exception as e:
            reply({"error": f"{type(e).__name__}: {e}"})


main()
