#!/usr/bin/env python
"""convkit against the frameworks a user would pick instead: LeNet-5 (and ResNet-20) training
steps and inference, each framework in its own process with the same thread count, rounds
alternated, per-round ratios, medians.

    python bench/peers.py [--rounds 3] [--threads 2] [--models lenet5,resnet20]
                          [--frameworks convkit,pytorch,torch.compile,tensorflow,jax,
                                        onnxruntime,openvino] [--json out.json]

Frameworks (bench extras, never convkit's dependencies; a framework that is not installed is
reported and skipped): PyTorch eager; torch.compile (inductor, static shapes); TensorFlow/Keras
(a tf.function training step with GradientTape, as a Keras user writes it, NHWC); JAX (jit,
NHWC, SGD with momentum written out); ONNX Runtime and OpenVINO (inference only, on the ONNX
file convkit.onnx.export writes of the same convkit model; OpenVINO in float32 like the rest:
its default on CPUs with AMX or AVX-512 BF16 is bfloat16, --openvino-precision bf16 times
that).

Every framework runs the same network (LeNet-5 as convkit.models.lenet5: conv 6@5x5 pad 2,
ReLU, max pool 2, conv 16@5x5, ReLU, max pool 2, linear 120, 84, 10; ResNet-20 as
convkit.models.resnet20, 1x1-convolution shortcuts with batch norm) on the same random data,
with its own initialisation. A training step is forward, cross-entropy loss, backward and an
SGD update with momentum 0.9 (lr 0.01); batch norm in training mode. Inference is eval mode.

In a round every framework's worker process starts, builds and warms up (compiles) its cases,
then times each: samples of >= 20 ms, median of --repeats samples per call. The rounds rotate
the order of the frameworks. Ratio = framework's time / convkit's time in the same round (above
1: convkit is faster); the table gives the median ratio over rounds. With --threads N below
the machine's core count every worker is pinned to the first N cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

FRAMEWORKS = ["convkit", "pytorch", "torch.compile", "tensorflow", "jax", "onnxruntime",
              "openvino"]
INFERENCE_ONLY = {"onnxruntime", "openvino"}
BATCHES = {"lenet5": {"train": (1, 64, 256), "infer": (1, 64, 256)},
           "resnet20": {"train": (128,), "infer": (1, 128)}}
IMAGE = {"lenet5": (1, 28, 28), "resnet20": (3, 32, 32)}
LR, MOMENTUM = 0.01, 0.9
OV_PRECISION = os.environ.get("CONVKIT_PEERS_OV_PRECISION", "f32")


def case_names(models):
    return [(m, kind, b) for m in models for kind in ("train", "infer") for b in BATCHES[m][kind]]


def data(model, batch):
    import numpy as np
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch,) + IMAGE[model]).astype(np.float32)
    return x, rng.integers(0, 10, batch).astype(np.int64)


# ---------------------------------------------------------------- the frameworks' cases
# Each returns {(model, kind, batch): fn}, fn() runs one step or one inference to completion.

def cases_convkit(models, threads, onnx_dir):
    import convkit
    from convkit import models as zoo, nn, optim
    convkit.set_num_threads(threads)
    out = {}
    for m, kind, b in case_names(models):
        x, y = data(m, b)
        net = getattr(zoo, m)()
        if kind == "infer":
            net.eval()
            out[m, kind, b] = lambda net=net, x=x: net(x)
            continue
        opt = optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
        crit = nn.CrossEntropyLoss()

        def step(net=net, opt=opt, crit=crit, x=x, y=y):
            crit(net(x), y)
            opt.zero_grad()
            net.backward(crit.backward(), input_grad=False)
            opt.step()
        out[m, kind, b] = step
    return out


def _torch_cases(models, threads, compiled):
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from torch_twins import resnet20
    from train_mnist_torch import lenet5
    torch.set_num_threads(threads)
    if compiled:  # one compiled graph per case, all in this process: no fallback to eager
        torch._dynamo.config.cache_size_limit = 64
        torch._dynamo.config.accumulated_cache_size_limit = 512
    out = {}
    for m, kind, b in case_names(models):
        x, y = data(m, b)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        net = {"lenet5": lenet5, "resnet20": resnet20}[m]()
        run = torch.compile(net, dynamic=False) if compiled else net
        if kind == "infer":
            net.eval()

            def infer(run=run, xt=xt):
                with torch.no_grad():
                    run(xt)
            out[m, kind, b] = infer
            continue
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)

        def step(run=run, opt=opt, xt=xt, yt=yt):
            loss = torch.nn.functional.cross_entropy(run(xt), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[m, kind, b] = step
    return out


def cases_pytorch(models, threads, onnx_dir):
    return _torch_cases(models, threads, compiled=False)


def cases_torch_compile(models, threads, onnx_dir):
    return _torch_cases(models, threads, compiled=True)


def _keras_net(keras, m):
    L = keras.layers
    if m == "lenet5":
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            L.Conv2D(6, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
            L.Conv2D(16, 5, activation="relu"), L.MaxPooling2D(2), L.Flatten(),
            L.Dense(120, activation="relu"), L.Dense(84, activation="relu"), L.Dense(10)])

    def conv_bn(t, c, k, s):
        t = L.Conv2D(c, k, strides=s, padding="same", use_bias=False)(t)
        return L.BatchNormalization(momentum=0.9, epsilon=1e-5)(t)
    inp = keras.Input((32, 32, 3))
    t = L.ReLU()(conv_bn(inp, 16, 3, 1))
    c_in = 16
    for c in (16, 32, 64):
        for i in range(3):
            s = 2 if i == 0 and c != 16 else 1
            body = conv_bn(L.ReLU()(conv_bn(t, c, 3, s)), c, 3, 1)
            short = conv_bn(t, c, 1, s) if (s != 1 or c_in != c) else t
            t = L.ReLU()(L.Add()([body, short]))
            c_in = c
    t = L.Dense(10)(L.GlobalAveragePooling2D()(t))
    return keras.Model(inp, t)


def cases_tensorflow(models, threads, onnx_dir):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras = tf.keras
    out = {}
    for m, kind, b in case_names(models):
        x, y = data(m, b)
        xt, yt = tf.constant(x.transpose(0, 2, 3, 1)), tf.constant(y)
        net = _keras_net(keras, m)
        if kind == "infer":
            infer = tf.function(lambda v, net=net: net(v, training=False))
            out[m, kind, b] = lambda infer=infer, xt=xt: infer(xt).numpy()
            continue
        opt = keras.optimizers.SGD(LR, momentum=MOMENTUM)
        lossf = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step(v, t, net=net, opt=opt, lossf=lossf):
            with tf.GradientTape() as tape:
                loss = lossf(t, net(v, training=True))
            grads = tape.gradient(loss, net.trainable_variables)
            opt.apply_gradients(zip(grads, net.trainable_variables))
            return loss
        out[m, kind, b] = lambda step=step, xt=xt, yt=yt: step(xt, yt).numpy()
    return out


def _jax_net(jax, m):
    """(params, state, apply(params, state, x, train) -> (logits, new_state)), NHWC."""
    jnp, lax = jax.numpy, jax.lax
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 64))

    def conv_w(k, cin, cout):
        return jax.random.normal(next(keys), (k, k, cin, cout)) * (2.0 / (k * k * cin)) ** 0.5

    def conv(x, w, s=1, pad="SAME"):
        return lax.conv_general_dilated(x, w, (s, s), pad,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def dense_w(i, o):
        return jax.random.normal(next(keys), (i, o)) * (1.0 / i) ** 0.5

    if m == "lenet5":
        params = {"c1": conv_w(5, 1, 6), "b1": jnp.zeros(6), "c2": conv_w(5, 6, 16),
                  "b2": jnp.zeros(16), "f1": dense_w(400, 120), "g1": jnp.zeros(120),
                  "f2": dense_w(120, 84), "g2": jnp.zeros(84), "f3": dense_w(84, 10),
                  "g3": jnp.zeros(10)}

        def pool(x):
            return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

        def apply(p, state, x, train):
            x = pool(jax.nn.relu(conv(x, p["c1"], pad=[(2, 2), (2, 2)]) + p["b1"]))
            x = pool(jax.nn.relu(conv(x, p["c2"], pad="VALID") + p["b2"]))
            x = x.reshape(x.shape[0], -1)
            x = jax.nn.relu(x @ p["f1"] + p["g1"])
            x = jax.nn.relu(x @ p["f2"] + p["g2"])
            return x @ p["f3"] + p["g3"], state
        return params, {}, apply

    layers = [("stem", 3, 16, 1)]
    c_in = 16
    for c in (16, 32, 64):
        for i in range(3):
            layers.append((f"{c}_{i}", c_in, c, 2 if i == 0 and c != 16 else 1))
            c_in = c
    params, state = {}, {}

    def add_bn(name, c):
        params[name + "g"], params[name + "b"] = jnp.ones(c), jnp.zeros(c)
        state[name + "m"], state[name + "v"] = jnp.zeros(c), jnp.ones(c)

    for name, ci, co, s in layers:
        params[name + "w1"] = conv_w(3, ci, co)
        add_bn(name + "n1", co)
        if name != "stem":
            params[name + "w2"] = conv_w(3, co, co)
            add_bn(name + "n2", co)
            if s != 1 or ci != co:
                params[name + "ws"] = conv_w(1, ci, co)
                add_bn(name + "ns", co)
    params["fc"], params["fcb"] = dense_w(64, 10), jnp.zeros(10)

    def bn(p, st, new, name, x, train):
        if train:
            mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
            n = x.size / x.shape[-1]
            new[name + "m"] = 0.9 * st[name + "m"] + 0.1 * mean
            new[name + "v"] = 0.9 * st[name + "v"] + 0.1 * var * n / (n - 1)
        else:
            mean, var = st[name + "m"], st[name + "v"]
        return (x - mean) * lax.rsqrt(var + 1e-5) * p[name + "g"] + p[name + "b"]

    def apply(p, st, x, train):
        new = dict(st)
        for name, ci, co, s in layers:
            if name == "stem":
                x = jax.nn.relu(bn(p, st, new, name + "n1", conv(x, p[name + "w1"]), train))
                continue
            h = jax.nn.relu(bn(p, st, new, name + "n1", conv(x, p[name + "w1"], s), train))
            h = bn(p, st, new, name + "n2", conv(h, p[name + "w2"]), train)
            if name + "ws" in p:
                x = bn(p, st, new, name + "ns", conv(x, p[name + "ws"], s), train)
            x = jax.nn.relu(h + x)
        return x.mean((1, 2)) @ p["fc"] + p["fcb"], new
    return params, state, apply


def cases_jax(models, threads, onnx_dir):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_cpu_multi_thread_eigen=true"
                               f" intra_op_parallelism_threads={threads}")
    import jax
    jnp = jax.numpy
    out = {}
    for m, kind, b in case_names(models):
        x, y = data(m, b)
        xj, yj = jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(y)
        params, state, apply = _jax_net(jax, m)
        if kind == "infer":
            infer = jax.jit(lambda p, s, v, apply=apply: apply(p, s, v, False)[0])
            out[m, kind, b] = (lambda infer=infer, p=params, s=state, xj=xj:
                               infer(p, s, xj).block_until_ready())
            continue

        def loss_fn(p, s, v, t, apply=apply):
            logits, new = apply(p, s, v, True)
            logp = jax.nn.log_softmax(logits)
            return -jnp.take_along_axis(logp, t[:, None], 1).mean(), new

        def step(p, s, mom, v, t, loss_fn=loss_fn):
            (loss, new), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, v, t)
            mom = jax.tree_util.tree_map(lambda u, gi: MOMENTUM * u + gi, mom, g)
            p = jax.tree_util.tree_map(lambda w, u: w - LR * u, p, mom)
            return p, new, mom, loss
        jstep = jax.jit(step, donate_argnums=(0, 1, 2))
        box = [params, state, jax.tree_util.tree_map(jnp.zeros_like, params)]

        def run(jstep=jstep, box=box, xj=xj, yj=yj):
            box[0], box[1], box[2], loss = jstep(box[0], box[1], box[2], xj, yj)
            loss.block_until_ready()
        out[m, kind, b] = run
    return out


def cases_onnxruntime(models, threads, onnx_dir):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    out = {}
    for m, kind, b in case_names(models):
        if kind != "infer":
            continue
        x, _ = data(m, b)
        sess = ort.InferenceSession(os.path.join(onnx_dir, m + ".onnx"), opts,
                                    providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        out[m, kind, b] = lambda sess=sess, name=name, x=x: sess.run(None, {name: x})
    return out


def cases_openvino(models, threads, onnx_dir):
    import openvino as ov
    core = ov.Core()
    out = {}
    for m, kind, b in case_names(models):
        if kind != "infer":
            continue
        x, _ = data(m, b)
        model = core.read_model(os.path.join(onnx_dir, m + ".onnx"))
        model.reshape([b] + list(IMAGE[m]))  # static shapes, as OpenVINO prefers
        # float32 as the others: on CPUs with AMX or AVX-512 BF16 OpenVINO's default inference
        # precision is bfloat16 (--openvino-precision bf16 times that)
        compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                     "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": OV_PRECISION})
        req = compiled.create_infer_request()
        out[m, kind, b] = lambda req=req, x=x: req.infer({0: x})
    return out


# ---------------------------------------------------------------- worker and driver

def time_cases(cases, repeats):
    """Median seconds per call of each case (bench/timing.py: warm-up and compile calls,
    samples of >= 20 ms with the garbage collector off)."""
    from timing import measure
    return {"/".join(map(str, key)): measure({0: fn}, repeats)[0] for key, fn in cases.items()}


def worker(args):
    if args.threads < (os.cpu_count() or 1) and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(args.threads)))
    build = globals()["cases_" + args.worker.replace(".", "_")]
    cases = build(args.models.split(","), args.threads, args.onnx_dir)
    print("RESULT " + json.dumps(time_cases(cases, args.repeats)), flush=True)


def available(fw):
    mod = {"convkit": "convkit", "pytorch": "torch", "torch.compile": "torch",
           "tensorflow": "tensorflow", "jax": "jax", "onnxruntime": "onnxruntime",
           "openvino": "openvino"}[fw]
    import importlib.util
    return importlib.util.find_spec(mod) is not None


def export_onnx(models, onnx_dir):
    import convkit.onnx
    from convkit import models as zoo
    for m in models:
        convkit.onnx.export(getattr(zoo, m)().eval(), os.path.join(onnx_dir, m + ".onnx"),
                            (1,) + IMAGE[m])


def run_worker(fw, args, onnx_dir):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               CONVKIT_PEERS_OV_PRECISION=args.openvino_precision,
               MKL_NUM_THREADS=str(args.threads), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", fw, "--threads",
           str(args.threads), "--models", args.models, "--repeats", str(args.repeats),
           "--onnx-dir", onnx_dir]
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        print(f"  {fw}: failed (exit {p.returncode}): " + " | ".join(tail), file=sys.stderr)
        return None
    print(f"  {fw}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return json.loads(lines[-1][7:])


def machine():
    from timing import cpu_model
    return f"{cpu_model()}, {os.cpu_count()} CPUs"


def versions(fws):
    import importlib.metadata as md
    dist = {"convkit": "convkit", "pytorch": "torch", "torch.compile": "torch",
            "tensorflow": "tensorflow-cpu", "jax": "jax", "onnxruntime": "onnxruntime",
            "openvino": "openvino"}
    out = {}
    for fw in fws:
        try:
            out[fw] = md.version(dist[fw])
        except md.PackageNotFoundError:
            out[fw] = md.version("tensorflow") if fw == "tensorflow" else "?"
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default="lenet5,resnet20")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    p.add_argument("--json", default=None)
    p.add_argument("--openvino-precision", default="f32", choices=["f32", "bf16"],
                   help="OpenVINO's inference precision (its default on AMX CPUs is bf16)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--onnx-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    models = args.models.split(",")
    if unknown := set(models) - set(BATCHES):
        p.error(f"--models: unknown {sorted(unknown)}; known: {sorted(BATCHES)}")
    fws = args.frameworks.split(",")
    if unknown := set(fws) - set(FRAMEWORKS):
        p.error(f"--frameworks: unknown {sorted(unknown)}; known: {FRAMEWORKS}")
    if "convkit" not in fws:
        fws.insert(0, "convkit")
    missing = [fw for fw in fws if not available(fw)]
    for fw in missing:
        print(f"{fw}: not installed, skipped (pip install it to compare)", file=sys.stderr)
    fws = [fw for fw in fws if fw not in missing]
    onnx_dir = tempfile.mkdtemp(prefix="convkit-peers-")
    export_onnx(models, onnx_dir)
    rounds = []
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
        order = fws[r % len(fws):] + fws[:r % len(fws)]
        got = {fw: run_worker(fw, args, onnx_dir) for fw in order}
        rounds.append({fw: v for fw, v in got.items() if v is not None})
    report(rounds, fws, models, args)


def report(rounds, fws, models, args):
    keys = ["/".join(map(str, k)) for k in case_names(models)]
    cols = [fw for fw in fws if fw != "convkit"]
    table = {}
    print(f"\n{machine()}; {args.threads} threads; {len(rounds)} rounds; "
          + ", ".join(f"{k} {v}" for k, v in versions(fws).items()))
    print("\nms per call (median over rounds); in brackets framework / convkit, the median of "
          "the per-round ratios\n")
    print("| case | convkit | " + " | ".join(cols) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in cols) + " |")
    for key in keys:
        ck = [r["convkit"][key] for r in rounds if key in r.get("convkit", {})]
        if not ck:
            continue
        row = {"convkit_ms": statistics.median(ck) * 1e3}
        cells = []
        for fw in cols:
            pairs = [(r[fw][key], r["convkit"][key]) for r in rounds
                     if key in r.get(fw, {}) and key in r.get("convkit", {})]
            if not pairs:
                cells.append("-")
                continue
            ms = statistics.median(t for t, _ in pairs) * 1e3
            ratio = statistics.median(t / c for t, c in pairs)
            row[fw] = {"ms": ms, "ratio": ratio}
            cells.append(f"{ms:.3f} ({ratio:.2f})")
        table[key] = row
        m, kind, b = key.split("/")
        label = f"{m} {'training step' if kind == 'train' else 'inference'}, batch {b}"
        print(f"| {label} | {row['convkit_ms']:.3f} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "threads": args.threads, "versions": versions(fws),
                       "rounds": rounds, "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
