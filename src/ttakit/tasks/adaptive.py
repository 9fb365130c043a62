"""Running an adaptive policy (:class:`~ttakit.policy.AdaptivePolicy`) for
classification: stage by stage, only the inputs still uncertain go on.

Stage 1 runs over every chunk of inputs as the plain run loop does
(:func:`ttakit.engine.forward_batches`). After a stage, each input's views so
far are merged with the policy's merge (an accumulator over all the
policy's distinct views, fed the ones run so far: the same state the full
run would hold at that point); inputs whose merged prediction is confident
are written out, the others wait for the next stage together with their
views' outputs. Survivors of consecutive chunks are gathered until a whole
batch (``batch_size`` inputs) waits, so the next stage's forward batches are
as full as stage 1's; at most ``PENDING_BATCHES`` batches (plus one chunk)
wait per stage, so memory stays bounded whatever the number of inputs. An
input that reaches the last stage gets exactly the full policy's merge.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .. import engine
from ..errors import InputError
from ..policy import AdaptivePolicy
from .classification_run import ClassificationResult, ClassificationRun, ClassificationTask

#: whole forward batches of inputs that may wait for a stage before it runs
PENDING_BATCHES = 1


class AdaptiveRun(ClassificationRun):
    """A classification run whose "chunks" are any set of inputs (given by
    their global indices), written out in any order."""

    def __init__(self, task, views, weights, n):
        super().__init__(task, views, weights, n)
        self.rows: torch.Tensor | None = None
        self.forwards = np.zeros(n or 0, np.int64)

    def begin_rows(self, rows: torch.Tensor, device) -> None:
        self.rows = rows
        self.start_index = int(rows[0]) if len(rows) else 0
        self.n = len(rows)
        self.begin_failures(self.n, 0, device)
        self.acc = self.stats = None
        self.chunk_views = None

    def fail(self, rows, reason, error=InputError):
        """As :meth:`TaskRun.fail`, for inputs named by ``self.rows``."""
        idx = rows.nonzero().flatten().tolist()
        if not idx:
            return
        if self.task.on_error == "raise":
            raise error(f"{len(idx)} input(s) failed: {reason} (first at index {int(self.rows[idx[0]])}). Pass "
                        f"on_error='mark' to get the other results and a list of the failed inputs")
        self.chunk_failed |= rows.to(self.chunk_failed.device)
        for i in idx:
            self.errors.setdefault(int(self.rows[i]), reason)

    def settle(self, keep: torch.Tensor) -> dict:
        """Write the inputs ``keep`` (a mask over the current rows) out; return the merged results."""
        m = self.merged()
        if keep.any():
            self._write(self.rows[keep].numpy(), m, keep.cpu())
            self.n_seen += int(keep.sum())
        return m

    def count(self, rows: torch.Tensor, k: int) -> None:
        end = int(rows.max()) + 1 if len(rows) else 0
        if end > len(self.forwards):
            self.forwards = np.concatenate([self.forwards, np.zeros(max(end, 2 * len(self.forwards)) -
                                                                    len(self.forwards), np.int64)])
        self.forwards[rows.numpy()] += k

    def finish(self) -> ClassificationResult:
        res = super().finish()
        f = self.forwards[:len(res)].copy()
        return dataclasses.replace(res, forward_passes=int(f.sum()), forwards=f)


class _Group:
    """Inputs waiting for a stage: global indices, prepared inputs and the
    outputs of the views run so far ``(V_so_far, n, ...)``."""

    def __init__(self, rows, x, outs):
        self.rows, self.x, self.outs = rows, x, outs

    def __len__(self):
        return len(self.rows)

    @staticmethod
    def join(groups: list["_Group"]) -> "_Group":
        if len(groups) == 1:
            return groups[0]
        return _Group(torch.cat([g.rows for g in groups]), torch.cat([g.x for g in groups]),
                      torch.cat([g.outs for g in groups], dim=1))

    def take(self, a: int, b: int) -> "_Group":
        return _Group(self.rows[a:b], self.x[a:b], self.outs[:, a:b])


def run_adaptive(task: ClassificationTask, adapter, data, policy: AdaptivePolicy, *, inputs,
                 batch_size: int | None = None, preprocess=None, progress=None) -> ClassificationResult:
    """Run ``policy`` stage by stage over ``data`` (see the module doc)."""
    if task.keep_views:
        raise InputError("return_views is not available with an adaptive policy (later views do not run for "
                         "every input); run its full policy (policy.full) for per-view outputs")
    bs = engine.check_batch_size(batch_size) or engine.default_batch_size(adapter.device)
    full = policy.unique()  # plain: every distinct view once, in stage order, with summed weights
    views, weights = list(full.views), list(full.weights)
    stage_of = policy.stage_of_views(views)
    stages = [[i for i, s in enumerate(stage_of) if s == k] for k in range(len(policy.stages))]
    run = AdaptiveRun(task, views, weights, inputs.count(data))
    limit = PENDING_BATCHES * bs
    pending: list[list[_Group]] = [[] for _ in stages]

    def process(k: int, g: _Group, bad=None) -> None:
        own = [views[i] for i in stages[k]]
        new: list = [None] * len(own)
        for j, out in engine.forward_views(adapter, g.x, own, bs, preprocess, task.convert_output, inputs):
            new[j] = out
        outs = torch.cat([g.outs, torch.stack(new)]) if len(g.outs) else torch.stack(new)
        run.count(g.rows, len(own))
        run.begin_rows(g.rows, g.x.device)
        if bad is not None:  # inputs that cannot be used (NaN pixels): they fail alone, or the run stops
            run.fail(bad[0], bad[1])
        so_far = [i for s in stages[:k + 1] for i in s]
        for j, i in enumerate(so_far):
            run.add(i, outs[j])
        if k == len(stages) - 1:
            run.settle(torch.ones(len(g), dtype=torch.bool))
            return
        go_on = policy.rules[k].uncertain(run.merged()["probs"]).cpu() & ~run.chunk_failed.cpu()
        run.settle(~go_on)
        if go_on.any():
            pending[k + 1].append(_Group(g.rows[go_on], g.x[go_on], outs[:, go_on]))
            flush(k + 1, final=False)

    def flush(k: int, final: bool) -> None:
        waiting = sum(len(g) for g in pending[k])
        if waiting == 0 or (not final and waiting < limit):
            return
        g = _Group.join(pending[k])
        pending[k] = []
        whole = len(g) if final else (len(g) // bs) * bs
        for a in range(0, whole, bs):
            process(k, g.take(a, min(a + bs, whole)))
        if whole < len(g):
            pending[k].append(g.take(whole, len(g)))

    for raw, start, x in engine.prepared_chunks(adapter, data, bs, inputs, preprocess):
        rows = torch.arange(start, start + x.shape[0])
        bad = inputs.invalid(x)
        if bad is not None:
            x = x.masked_fill(bad[0].view(-1, *([1] * (x.dim() - 1))), 0.0)
        for v in dict.fromkeys(views):
            v.check_input(x, start)
        process(0, _Group(rows, x, x.new_empty((0,))), bad)
        if progress is not None:
            progress.update(len(raw))
    for k in range(1, len(stages)):
        flush(k, final=True)
    return run.finish()


__all__ = ["run_adaptive", "AdaptiveRun", "PENDING_BATCHES"]
