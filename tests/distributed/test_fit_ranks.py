"""fit on several ranks: ``BatchNormalization(synchronized=True)``'s config, resuming a
checkpoint on the same world size, main-rank-only output and files, and History averaged
over the ranks. Each behaviour has a ``threads`` variant (a 2-rank world in-process, see
``threadcomm.thread_world``) and a ``world`` one (the MPI world: 2 ranks under mpiexec)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_ddp import B, assert_same_state, data, make_model, state
from threadcomm import run_ranks, thread_world

import gpucnn
import gpucnn.distributed as dist
from gpucnn import layers as L
from gpucnn.callbacks import CSVLogger, ModelCheckpoint
from gpucnn.optim import SGD, Adam

EPOCHS, RESUME_AT = 3, 1
SAMPLER_EPOCHS: list = []  # (rank, epoch) of every DistributedSampler.set_epoch


@pytest.fixture(autouse=True)
def record_sampler_epochs(monkeypatch):
    set_epoch = dist.DistributedSampler.set_epoch

    def recording(self, epoch: int) -> None:
        SAMPLER_EPOCHS.append((self.rank, epoch))
        set_epoch(self, epoch)

    monkeypatch.setattr(dist.DistributedSampler, "set_epoch", recording)


def fit_model(kind: str, seed: int) -> gpucnn.Sequential:
    """The tiny float64 CNN with ``synchronized=True`` batch norm, compiled."""
    m = make_model("flag", seed=seed)
    opt = SGD(m.parameters(), lr=0.1, momentum=0.9) if kind == "sgd" else \
        Adam(m.parameters(), lr=0.01)
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


# ------------------------------------------------------------------ synchronized=True


def test_synchronized_flag_round_trips(tmp_path) -> None:
    m = make_model("flag")
    bn = m.layers[1]
    assert bn.synchronized and bn.get_config()["synchronized"] is True
    assert "synchronized=True" in repr(bn)
    assert L.BatchNormalization.from_config(bn.get_config()).synchronized
    assert L.BatchNormalization().get_config()["synchronized"] is False
    assert "BatchNormalization" in m.summary(print_fn=None)  # eval-mode trace: no collective
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    m.save(tmp_path / "m.gcnn")
    back = gpucnn.load_model(tmp_path / "m.gcnn")
    assert back.layers[1].synchronized and type(back.layers[1]) is L.BatchNormalization
    assert back.dtype == np.float64  # the saved float64 weights keep their dtype
    assert_same_state(state(back), state(m), "load_model")
    with pytest.raises(TypeError, match="synchronized must be a bool"):
        L.BatchNormalization(synchronized="yes")


# ------------------------------------------------------------------ resuming


def resume_run(comm, kind: str, ckpt_dir: str) -> tuple[dict, dict, list, list]:
    """``(uninterrupted state, resumed state, files this rank saved, sampler epochs seen)``:
    EPOCHS epochs of fit, and RESUME_AT epochs saved by a ModelCheckpoint then the rest
    from the checkpoint (``initial_epoch``)."""
    x, y = data()
    full = fit_model(kind, seed=comm.rank)  # rank 0's initial weights are broadcast
    full.fit(x, y, batch_size=B, epochs=EPOCHS, verbose=0, seed=11)
    first = fit_model(kind, seed=comm.rank)
    path = os.path.join(ckpt_dir, "ckpt_{epoch}.gcnn")
    ckpt = ModelCheckpoint(path)
    first.fit(x, y, batch_size=B, epochs=RESUME_AT, verbose=0, seed=11, callbacks=[ckpt])
    comm.barrier()  # rank 0 has written the checkpoint
    resumed = gpucnn.load_model(path.format(epoch=RESUME_AT))
    assert resumed.completed_epochs == RESUME_AT
    seen = len(SAMPLER_EPOCHS)
    resumed.fit(x, y, batch_size=B, epochs=EPOCHS, initial_epoch=resumed.completed_epochs,
                verbose=0, seed=11)
    epochs = [e for r, e in SAMPLER_EPOCHS[seen:] if r == comm.rank]
    return state(full), state(resumed), list(ckpt.saved), epochs


def _check_resume(results: list, size: int, kind: str) -> None:
    for r, (full, resumed, saved, epochs) in enumerate(results):
        assert_same_state(resumed, full, f"{kind} resumed on rank {r} of {size}")
        assert bool(saved) == (r == 0), f"rank {r} saved {saved}"  # only rank 0 writes
        assert epochs == list(range(RESUME_AT, EPOCHS))  # the sampler resumes its epochs


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_threads_resume_continues_exactly(kind: str, tmp_path) -> None:
    with thread_world():
        res = run_ranks(2, lambda c: resume_run(c, kind, str(tmp_path)))
    assert sorted(os.listdir(tmp_path)) == [f"ckpt_{RESUME_AT}.gcnn"]
    _check_resume(res, 2, kind)


def test_resume_continues_exactly(world, tmp_path) -> None:
    shared = world.broadcast_object(str(tmp_path), 0)  # rank 0's directory, for every rank
    full, resumed, saved, epochs = resume_run(world, "adam", shared)
    assert_same_state(resumed, full, f"adam resumed on rank {world.rank} of {world.size}")
    assert bool(saved) == (world.rank == 0), f"rank {world.rank} saved {saved}"
    if world.size > 1:
        assert epochs == list(range(RESUME_AT, EPOCHS))


# ------------------------------------------------------------------ main rank, History


def test_threads_only_the_main_rank_prints_and_writes(tmp_path) -> None:
    from gpucnn.distributed.fit import fit_setup

    def body(c):
        m = fit_model("sgd", seed=0)
        cbs = [ModelCheckpoint(str(tmp_path / "m.gcnn")), CSVLogger(str(tmp_path / "l.csv")),
               gpucnn.callbacks.History()]
        _, _, kept, verbose = fit_setup(m, None, cbs, 1)
        return [type(k).__name__ for k in kept], verbose

    (k0, v0), (k1, v1) = run_ranks(2, lambda c: _in_world(c, body))
    assert (v0, v1) == (1, 0)
    assert k0 == ["ModelCheckpoint", "CSVLogger", "History"] and k1 == ["History"]


def _in_world(c, body):
    with thread_world():
        return body(c)


def test_only_the_main_rank_prints_and_writes(world, tmp_path, capfd) -> None:
    x, y = data()
    m = fit_model("sgd", seed=0)
    log = tmp_path / "log.csv"
    m.fit(x, y, batch_size=B, epochs=1, verbose=2, seed=3, callbacks=[CSVLogger(str(log))])
    out = capfd.readouterr().out
    wrote = log.exists()
    flags = world.allgather_object((bool(out.strip()), wrote))
    assert flags[world.rank] == (world.rank == 0, world.rank == 0)


def test_threads_history_is_averaged_over_the_ranks() -> None:
    """Each rank's own loss differs (its share of the data); History holds their mean,
    the same on both ranks and equal to one process at the doubled batch."""
    x, y = data()

    def body(c):
        m = fit_model("sgd", seed=c.rank)
        h = m.fit(x, y, batch_size=B, epochs=2, verbose=0, seed=11)
        return h.history, state(m)

    with thread_world():
        (h0, s0), (h1, s1) = run_ranks(2, body)
    with dist.local_scope():  # one process, also under mpiexec
        ref = fit_model("sgd", seed=0)
        want = ref.fit(x, y, batch_size=2 * B, epochs=2, verbose=0, seed=11).history
    assert h0 == h1 and h0.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(h0[k], want[k], rtol=1e-9)
    assert_same_state(s0, state(ref), "threads fit")
    assert_same_state(s1, state(ref), "threads fit rank 1")


def test_threads_one_rank_stopping_stops_every_rank_at_the_same_step() -> None:
    """A callback that stops only rank 1 (as TerminateOnNaN would on that rank's own batch)
    stops both ranks after the same step, with the same weights, instead of leaving rank 0
    waiting in the next all-reduce."""
    x, y = data()

    class StopRankOne(gpucnn.callbacks.Callback):
        def __init__(self, rank: int) -> None:
            super().__init__()
            self.rank, self.steps = rank, 0

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.steps += 1
            if self.rank == 1 and batch == 1:
                self.model.stop_training = True

    def body(c):
        m = fit_model("sgd", seed=c.rank)
        cb = StopRankOne(c.rank)
        m.fit(x, y, batch_size=B, epochs=2, verbose=0, seed=11, callbacks=[cb])
        return cb.steps, m.completed_epochs, state(m)

    with thread_world():
        (n0, e0, s0), (n1, e1, s1) = run_ranks(2, body)
    assert (n0, n1) == (2, 2) and e0 == e1
    assert_same_state(s0, s1, "both ranks after the agreed stop")
