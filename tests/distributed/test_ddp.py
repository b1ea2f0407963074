"""gpucnn.distributed: communicators, sampler, DataParallel (equivalence, overlap, bucket
order, mismatched models), synchronised batch norm and fit.

Each test runs on every rank of the world (``world`` fixture: 1 rank under plain pytest, N
under ``mpiexec -n N python -m mpi4py -m pytest tests/distributed``); the ``threads`` tests
run a 2-rank world of threads in-process, so the 2-rank logic is checked in plain pytest
too. Collectives come before any assertion, so a failing rank cannot leave another waiting.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadcomm import run_ranks, thread_world  # tests/distributed/threadcomm.py

import gpucnn
import gpucnn.distributed as dist
import gpucnn.functional as F
from gpucnn import layers as L
from gpucnn.backend import to_numpy
from gpucnn.callbacks import ModelCheckpoint
from gpucnn.data import DataLoader
from gpucnn.optim import SGD, Adam
from gpucnn.tensor import Tensor

N_SAMPLES, B, STEPS = 32, 4, 3
_BUILD = threading.Lock()


def T(a: np.ndarray) -> Tensor:  # noqa: N802 - a Tensor on the active backend
    return Tensor(a, backend=gpucnn.backend.current())


def to64(model: gpucnn.Module) -> gpucnn.Module:
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    for b in model.buffers():
        b.data = b.data.astype(np.float64)
    return model


def make_model(bn: str | None, seed: int = 0, width: int = 3) -> gpucnn.Sequential:
    """A tiny float64 CNN; ``bn``: None, "plain", "sync" (converted) or "flag"
    (``BatchNormalization(synchronized=True)``) batch norm."""
    with _BUILD:  # the seeded global generator: one thread-rank at a time
        return _make_model(bn, seed, width)


def _make_model(bn: str | None, seed: int, width: int) -> gpucnn.Sequential:
    gpucnn.manual_seed(seed)
    # no conv bias before batch norm: its gradient is rounding noise, which Adam amplifies
    layers = [L.Conv2D(width, 3, input_shape=(1, 6, 6), use_bias=bn is None)]
    if bn is not None:
        layers.append(L.BatchNormalization(momentum=0.9, synchronized=bn == "flag"))
    layers += [L.ReLU(), L.Flatten(), L.Dense(3)]
    m = gpucnn.Sequential(layers)
    m.build((1, 6, 6))
    to64(m)
    if bn == "sync":
        dist.convert_sync_batchnorm(m)
    return m


def data(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N_SAMPLES, 1, 6, 6)), rng.integers(0, 3, N_SAMPLES)


def state(model: gpucnn.Module) -> dict:
    return {k: to_numpy(v.data if isinstance(v, Tensor) else v).copy()
            for k, v in model.state_dict().items()}


def make_opt(kind: str, params: list):
    return SGD(params, lr=0.1, momentum=0.9) if kind == "sgd" else Adam(params, lr=0.01)


def train_ddp(comm, kind: str, bn: str | None) -> dict:
    """STEPS steps of this rank's share (batch B) through DataParallel."""
    x, y = data()
    model = make_model(bn, seed=17 * comm.rank)  # differing inits: rank 0's is broadcast
    if bn == "sync":
        dist.convert_sync_batchnorm(model, comm)
    ddp = dist.DataParallel(model, bucket_cap_mb=1e-4, first_bucket_mb=1e-5, communicator=comm)
    opt = make_opt(kind, ddp.parameters())
    sampler = dist.DistributedSampler(N_SAMPLES, comm.size, comm.rank, seed=7)
    loader = DataLoader((x, y), batch_size=B, sampler=sampler, dtype=np.float64, prefetch=0)
    it = iter(loader)
    for _ in range(STEPS):
        xb, yb = next(it)
        opt.zero_grad()
        loss = F.cross_entropy(ddp(Tensor(xb)), Tensor(yb))
        loss.backward()
        opt.step()
    it.close()
    return state(model)


def train_single(kind: str, bn: str | None, size: int) -> dict:
    """The same STEPS steps in one process at batch ``size * B`` (plain batch norm for
    "sync" and "flag": the global batch's statistics)."""
    x, y = data()
    model = make_model(bn if bn not in ("sync", "flag") else "plain", seed=0)
    opt = make_opt(kind, model.parameters())
    loader = DataLoader((x, y), batch_size=size * B, shuffle=True, seed=7, dtype=np.float64,
                        prefetch=0)
    it = iter(loader)
    for _ in range(STEPS):
        xb, yb = next(it)
        opt.zero_grad()
        F.cross_entropy(model(Tensor(xb)), Tensor(yb)).backward()
        opt.step()
    it.close()
    return state(model)


def assert_same_state(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12,
                                   err_msg=f"{what}: {k}")


# ------------------------------------------------------------------ communicators


def test_world_and_collectives(world) -> None:
    comm = world
    assert dist.is_initialized()
    assert (dist.rank(), dist.world_size()) == (comm.rank, comm.size)
    assert dist.is_main() == (comm.rank == 0)
    assert 0 <= dist.local_rank() < comm.size
    dist.barrier()
    x = np.full(5, comm.rank + 1.0)
    comm.allreduce(x, "sum")
    a = np.full(3, float(comm.rank))
    comm.allreduce(a, "avg")
    m = np.array([comm.rank], dtype=np.int64)
    comm.allreduce(m, "max")
    h = comm.allreduce_async(np.arange(4.0) * (comm.rank + 1), "sum")
    b = np.full(2, 10.0 + comm.rank)
    comm.broadcast(b, 0)
    objs = comm.allgather_object({"rank": comm.rank})
    root_obj = comm.broadcast_object(("hello", comm.rank), 0)
    s = comm.size
    np.testing.assert_array_equal(x, np.full(5, s * (s + 1) / 2))
    np.testing.assert_allclose(a, np.full(3, (s - 1) / 2))
    assert m[0] == s - 1
    np.testing.assert_array_equal(h.wait(), np.arange(4.0) * s * (s + 1) / 2)
    assert h.done()
    np.testing.assert_array_equal(b, [10.0, 10.0])
    assert objs == [{"rank": r} for r in range(s)]
    assert root_obj == ("hello", 0)


def test_collectives_of_device_arrays(world) -> None:
    """On the cuda backend (the simulated pass): device arrays through the communicator."""
    if gpucnn.backend.current() != "cuda":
        pytest.skip("the cuda backend is not active")
    xp = gpucnn.backend.get().xp
    x = xp.full(4, float(world.rank + 1))
    world.allreduce(x, "sum")
    b = xp.full(2, float(world.rank))
    world.broadcast(b, 0)
    s = world.size
    np.testing.assert_array_equal(to_numpy(x), np.full(4, s * (s + 1) / 2))
    np.testing.assert_array_equal(to_numpy(b), np.zeros(2))


def test_collective_argument_errors(world) -> None:
    with pytest.raises(ValueError, match="op must be one of"):
        world.allreduce(np.zeros(2), "prod")
    with pytest.raises(ValueError, match="C-contiguous"):
        world.allreduce(np.zeros((2, 2))[:, 0])
    with pytest.raises(TypeError, match="NumPy or device array"):
        world.allreduce([1.0, 2.0])
    with pytest.raises(TypeError, match="'avg' needs a floating"):
        world.allreduce(np.zeros(2, dtype=np.int64), "avg")
    with pytest.raises(ValueError, match="root must be a rank"):
        world.broadcast(np.zeros(2), world.size)
    from gpucnn.distributed import world as w

    saved, w._world = w._world, None  # init() is idempotent: check its argument as new
    try:
        with pytest.raises(ValueError, match="communicator must be 'mpi'"):
            dist.init(communicator="gloo")
        with pytest.raises(TypeError, match="communicator must be None"):
            dist.init(communicator=3)
    finally:
        w._world = saved


def test_local_communicator_and_scope(world) -> None:
    c = dist.LocalCommunicator()
    x = np.arange(3.0)
    assert c.allreduce(x, "avg") is x and c.allgather_object(5) == [5]
    with dist.local_scope():
        assert dist.world_size() == 1 and not dist.is_initialized()
    assert dist.world_size() == world.size


# ------------------------------------------------------------------ sampler and loader


@pytest.mark.parametrize("n,w", [(16, 2), (17, 2), (10, 3), (2, 4)])
def test_sampler_shares_are_disjoint_padded_and_match_one_process(n: int, w: int) -> None:
    shares = []
    for r in range(w):
        s = dist.DistributedSampler(n, num_replicas=w, rank=r, seed=3)
        s.set_epoch(2)
        shares.append(s.indices())
        assert len(s) == -(-n // w) == len(shares[-1])
    order = np.random.default_rng(np.random.SeedSequence([3, 2])).permutation(n)
    padded = np.resize(order, -(-n // w) * w)
    # step k of the w ranks at batch b covers step k of one process at batch w * b
    interleaved = np.stack(shares, axis=1).reshape(-1)
    np.testing.assert_array_equal(interleaved, padded)
    assert set(np.concatenate(shares)) == set(range(n))
    other = dist.DistributedSampler(n, num_replicas=w, rank=0, seed=3)
    other.set_epoch(3)
    assert n < 3 or not np.array_equal(other.indices(), shares[0])


def test_sampler_drop_last_and_errors() -> None:
    s = dist.DistributedSampler(7, num_replicas=2, rank=1, shuffle=False, drop_last=True)
    np.testing.assert_array_equal(s.indices(), [1, 3, 5])
    with pytest.raises(ValueError, match="rank must be in"):
        dist.DistributedSampler(4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas"):
        dist.DistributedSampler(4, num_replicas=0, rank=0)
    with pytest.raises(ValueError, match="excludes shuffle=True"):
        DataLoader(np.zeros((4, 1)), sampler=s, shuffle=True)


def test_dataloader_with_sampler_yields_the_share() -> None:
    x = np.arange(10.0).reshape(10, 1)
    s = dist.DistributedSampler(10, num_replicas=2, rank=1, seed=5)
    loader = DataLoader(x, batch_size=2, sampler=s, dtype=None, prefetch=0, backend="numpy")
    loader.set_epoch(4)
    got = np.concatenate([b[0][:, 0] for b in loader])
    s.set_epoch(4)
    np.testing.assert_array_equal(got, s.indices().astype(float))
    assert len(loader) == 3


# ------------------------------------------------------------------ DataParallel


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("bn", [None, "sync", "flag"])
def test_ranks_equal_one_process_at_the_doubled_batch(world, kind: str, bn: str | None) -> None:
    got = train_ddp(world, kind, bn)
    with dist.local_scope():
        want = train_single(kind, bn, world.size)
    assert_same_state(got, want, f"{kind}, bn={bn}, {world.size} rank(s)")


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("bn", [None, "sync", "flag"])
def test_threads_two_ranks_equal_one_process(kind: str, bn: str | None) -> None:
    with thread_world():  # "flag": the layer asks the world for its communicator
        got = run_ranks(2, lambda c: train_ddp(c, kind, bn))
    want = train_single(kind, bn, 2)
    for r in range(2):
        assert_same_state(got[r], want, f"threads rank {r}, {kind}, bn={bn}")


def test_threads_plain_batch_norm_is_per_rank_statistics() -> None:
    """Unsynchronised batch norm: what is equal is one process that normalises each rank's
    B samples with their own statistics and averages the ranks' gradients (parameters);
    the running statistics stay per rank."""
    got = run_ranks(2, lambda c: train_ddp(c, "sgd", "plain"))
    x, y = data()
    model = make_model("plain", seed=0)
    opt = make_opt("sgd", model.parameters())
    loader = DataLoader((x, y), batch_size=2 * B, shuffle=True, seed=7, dtype=np.float64,
                        prefetch=0)
    it = iter(loader)
    for _ in range(STEPS):
        xb, yb = next(it)
        opt.zero_grad()
        for r in range(2):
            F.cross_entropy(model(Tensor(xb[r::2])), Tensor(yb[r::2])).backward()
        for p in model.parameters():
            p.grad.data /= 2
        opt.step()
    it.close()
    want = state(model)
    for r in range(2):
        for k in want:
            if "running" not in k:
                np.testing.assert_allclose(got[r][k], want[k], rtol=1e-10, atol=1e-12,
                                           err_msg=k)
    assert not np.allclose(got[0]["1.running_mean"], got[1]["1.running_mean"])


def test_overlap_and_bucket_order(world) -> None:
    model = make_model(None, width=4)
    ddp = dist.DataParallel(model, bucket_cap_mb=1e-4, first_bucket_mb=1e-5)
    ddp.reducer.record_events = True
    x, y = data()
    F.cross_entropy(ddp(T(x[:B])), T(y[:B])).backward()
    layouts = world.allgather_object(ddp.reducer.layout())
    ev = ddp.reducer.events
    names = [n for n, _ in model.named_parameters()]
    assert len(ddp.reducer.buckets) >= 3
    # buckets in reverse parameter order, the same on every rank
    assert [n for b in layouts[0] for n in b] == names[::-1]
    assert all(lay == layouts[0] for lay in layouts)
    # the first bucket's all-reduce starts before backward produced the first layer's grads
    first_start = ev.index(("allreduce_start", 0))
    assert first_start < ev.index(("grad_ready", names[0]))
    starts = [b for k, b in ev if k == "allreduce_start"]
    assert starts == list(range(len(ddp.reducer.buckets)))
    assert ev[-1] == ("allreduce_wait", len(ddp.reducer.buckets) - 1)
    assert not ddp.reducer.pending


def test_threads_overlap_counts_collectives() -> None:
    def body(c):
        model = make_model(None, width=4)
        ddp = dist.DataParallel(model, bucket_cap_mb=1e-4, first_bucket_mb=1e-5,
                                communicator=c)
        x, y = data()
        before = c.started
        F.cross_entropy(ddp(T(x[c.rank::2][:B])), T(y[c.rank::2][:B])).backward()
        return c.started - before, len(ddp.reducer.buckets), \
            [to_numpy(p.grad.data) for p in model.parameters()]

    (n0, nb, g0), (n1, _, g1) = run_ranks(2, body)
    assert n0 == n1 == nb
    for a, b in zip(g0, g1):
        np.testing.assert_array_equal(a, b)  # averaged: the same on both ranks


def test_mismatched_models_raise_at_wrap_time(world) -> None:
    model = make_model(None, width=3 + (world.rank if world.size > 1 else 0))
    if world.size == 1:
        pytest.skip("needs two ranks (see the threads variant)")
    with pytest.raises(ValueError, match="models differ across ranks"):
        dist.DataParallel(model)


def test_threads_mismatched_models_raise_on_every_rank() -> None:
    def body(c):
        try:
            dist.DataParallel(make_model(None, width=3 + c.rank), communicator=c)
        except ValueError as e:
            return str(e)
        return None

    msgs = run_ranks(2, body)
    assert all(m is not None and "models differ across ranks" in m for m in msgs)
    assert "'0.weight' has shape (4, 1, 3, 3)" in msgs[0]


def test_threads_unused_parameter_needs_finish_gradients() -> None:
    class Two(gpucnn.Model):
        def __init__(self) -> None:
            super().__init__()
            self.a = L.Dense(2, input_shape=(3,))
            self.b = L.Dense(2, input_shape=(3,))

        def forward(self, x):
            return self.a(x)

    def body(c):
        m = Two()
        m.a.build((3,))
        m.b.build((3,))
        ddp = dist.DataParallel(m, communicator=c, first_bucket_mb=1e-5, bucket_cap_mb=1e-5)
        x = T(np.ones((2, 3), dtype=np.float32) * (c.rank + 1))
        ddp(x).sum().backward()
        pending = ddp.reducer.pending
        try:
            ddp(x)
            err = None
        except RuntimeError as e:
            err = str(e)
        ddp.finish_gradients()
        return pending, err, to_numpy(m.a.weight.grad.data), m.b.weight.grad is not None

    res = run_ranks(2, body)
    for pending, err, _ga, gb in res:
        assert pending and "finish_gradients()" in err and gb
    np.testing.assert_array_equal(res[0][2], res[1][2])


def test_no_sync_accumulates_then_averages(world) -> None:
    model = make_model(None)
    ddp = dist.DataParallel(model)
    x, y = data()
    with ddp.no_sync():
        F.cross_entropy(ddp(T(x[:B])), T(y[:B])).backward()
    assert not ddp.reducer.pending
    F.cross_entropy(ddp(T(x[B:2 * B])), T(y[B:2 * B])).backward()
    assert not ddp.reducer.pending


def test_hook_registration_and_removal() -> None:
    p = gpucnn.Parameter(np.ones(3))
    seen = []
    h = dist.register_post_accumulate_grad_hook(
        p, lambda t: seen.append(to_numpy(t.grad.data).copy())
    )
    (p * p).sum().backward()
    h.remove()
    (p * 2).sum().backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], [2.0, 2.0, 2.0])
    import copy
    import pickle

    dist.register_post_accumulate_grad_hook(p, lambda t: None)
    assert not copy.deepcopy(p).__dict__.get("_post_accumulate_grad_hooks")
    assert not pickle.loads(pickle.dumps(p)).__dict__.get("_post_accumulate_grad_hooks")
    with pytest.raises(TypeError, match="expected a Tensor"):
        dist.register_post_accumulate_grad_hook(np.ones(2), print)
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        dist.DataParallel(make_model(None), bucket_cap_mb=0)
    with pytest.raises(TypeError, match="gpucnn Module"):
        dist.DataParallel(object())


# ------------------------------------------------------------------ sync batch norm


def test_sync_batch_norm_one_rank_is_plain_batch_norm(rng) -> None:
    x = rng.standard_normal((4, 3, 2, 2))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    outs = []
    for fn in ("plain", "sync"):
        xt = Tensor(x.copy(), requires_grad=True)
        wt, bt = Tensor(w.copy(), requires_grad=True), Tensor(b.copy(), requires_grad=True)
        rm, rv = np.zeros(3), np.ones(3)
        if fn == "plain":
            y = F.batch_norm(xt, rm, rv, wt, bt, training=True, momentum=0.1, eps=1e-5)
        else:
            y = dist.sync_batch_norm(xt, rm, rv, wt, bt, dist.LocalCommunicator(),
                                     momentum=0.1, eps=1e-5)
        (y * Tensor(np.linspace(-1, 1, y.numel()).reshape(y.shape))).sum().backward()
        outs.append([to_numpy(a) for a in (y.data, xt.grad.data, wt.grad.data, bt.grad.data)]
                    + [rm, rv])
    for a, b_ in zip(*outs):
        np.testing.assert_allclose(a, b_, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ fit


def fit_model(bn: str | None, seed: int) -> gpucnn.Sequential:
    m = make_model(bn, seed=seed)
    m.compile(optimizer=SGD(m.parameters(), lr=0.1, momentum=0.9),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def test_fit_on_ranks_equals_one_process_at_the_doubled_batch(world, tmp_path) -> None:
    x, y = data()
    m = fit_model("sync", seed=world.rank)  # rank 0's initial weights are broadcast
    ckpt = ModelCheckpoint(str(tmp_path / f"r{world.rank}_{{epoch}}.gcnn"))
    hist = m.fit(x, y, batch_size=B, epochs=2, verbose=0, seed=11, callbacks=[ckpt])
    got = state(m)
    logs = world.allgather_object(hist.history)
    with dist.local_scope():
        ref = fit_model("sync", seed=0)
        want_hist = ref.fit(x, y, batch_size=world.size * B, epochs=2, verbose=0, seed=11)
    assert_same_state(got, state(ref), f"fit on {world.size} rank(s)")
    assert all(lg == logs[0] for lg in logs)  # averaged logs: the same on every rank
    for k in want_hist.history:
        np.testing.assert_allclose(hist.history[k], want_hist.history[k], rtol=1e-9)
    assert bool(ckpt.saved) == (world.rank == 0)
