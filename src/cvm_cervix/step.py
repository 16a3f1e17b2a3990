"""One training step on device tensors, eager (the reference) or replayed as a CUDA graph.

The step gathers its batch from the device-resident uint8 images (in its flip4x form), scales it,
flips it at random, runs forward, loss, backward and the optimiser, and adds to running sums that
stay on the device (loss, correct count, the first step whose loss was not finite, the step count),
so nothing is read back per step.

:class:`TrainStep` runs it eagerly. :class:`CapturedStep` captures the same function once as a CUDA
graph (``torch.cuda.graph``) and replays it: at the paper's batch of 16 a step is hundreds of small
kernels, and the host launching them, not the GPU, sets the pace. A graph needs static shapes, so
in captured mode an epoch drops its last incomplete batch (as timm's training loader does); AdamW
must be ``capturable`` (its step count lives on the device); random flips come from the CUDA
generator, which graphs advance on every replay; BatchNorm statistics update in the graph as in
eager mode. A run with a loss scaler (float16 autocast on a GPU without bfloat16) stays eager:
the scaler's inf check reads back; so does a run whose images are kept in host memory, since the
graph's batch gather must run on the GPU (:func:`why_not_captured`).
"""

from __future__ import annotations

import logging

import torch

from .engine import autocast, scale

log = logging.getLogger(__name__)
WARMUP_STEPS = 3  # eager steps on a side stream before capture: the allocator and cuDNN settle first

# augment: stain. Ruifrok & Johnston's stain vectors as scikit-image's rgb2hed/hed2rgb hold them (rows:
# haematoxylin, eosin, DAB), and the jitter of Tellez et al. (2019): each stain's concentration s becomes
# α·s + β, α ~ U(1 − σ, 1 + σ) and β ~ U(−σ, σ) per image and stain. Written here, on the device and in the
# batch like the flips, because torchstain's augmentor fits a Macenko basis per image on the host.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
RGB_FROM_HED = RGB_FROM_HED / RGB_FROM_HED.norm(dim=1, keepdim=True)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
STAIN_SIGMA = 0.05  # σ of augment: stain


def hed_jitter(images: torch.Tensor, sigma: float = STAIN_SIGMA, generator=None) -> torch.Tensor:
    """``images`` (B×3×H×W in [0, 1]) with each stain's amount jittered in HED space, clipped to [0, 1]; at
    ``sigma`` 0 the same images (the round trip through HED space is exact up to float rounding)."""
    b, device = len(images), images.device
    alpha = 1 + (2 * torch.rand(b, 1, 3, device=device, generator=generator) - 1) * sigma
    beta = (2 * torch.rand(b, 1, 3, device=device, generator=generator) - 1) * sigma
    # in optical density (−log of the transmitted light), as Tellez et al. jittered it: scikit-image's
    # rgb2hed has since divided by −log(1e-6), on which scale the same β would be 14 times as strong
    optical_density = -torch.log(images.clamp_min(1e-6)).flatten(2).transpose(1, 2)  # B × HW × 3
    stains = optical_density @ HED_FROM_RGB.to(device, images.dtype)
    stains = stains * alpha + beta
    rgb = torch.exp(-(stains @ RGB_FROM_HED.to(device, images.dtype)))
    return rgb.clamp(0, 1).transpose(1, 2).reshape(images.shape)


def flip4x(images: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
    """The paper's ×4 transforms per image: kind 0 original, 1 rotated 180°, 2 left-right, 3 up-down."""
    k = kinds.view(-1, 1, 1, 1)
    out = torch.where(k == 1, images.flip(-1, -2), images)
    out = torch.where(k == 2, images.flip(-1), out)
    return torch.where(k == 3, images.flip(-2), out)


def flip_views(images: torch.Tensor) -> list[torch.Tensor]:
    """The four views of :func:`flip4x` (original, rotated 180°, left-right, up-down), in that order: the
    test-time flips whose mean probability is the run's TTA prediction."""
    return [images, images.flip(-1, -2), images.flip(-1), images.flip(-2)]


def virtual_batch(
    images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, copies: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx`` of the training set enlarged ``copies`` times (1, or 4 for flip4x), on ``device``.

    Index ``i`` is image ``i % n`` in :func:`flip4x` form ``i // n``: the same order as
    :func:`cvm_cervix.train_data.expand_flip4x`, without holding four copies in memory.
    """
    n = len(images)
    base = idx % n
    batch, target = images[base].to(device, non_blocking=True), labels[base].to(device)
    if copies == 4:
        batch = flip4x(batch, (idx // n).to(device))
    return batch, target


class TrainStep:
    """The training step, eagerly; ``sums()`` reads nothing back (tensors on the device)."""

    captured = False

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer,
        scaler,
        images: torch.Tensor,
        labels: torch.Tensor,
        copies: int,
        device: torch.device,
        amp: bool,
        stain: float = 0.0,
    ):
        self.stain = stain  # σ of the HED jitter (augment: stain), 0: none
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.images, self.labels, self.copies, self.device, self.amp = images, labels, copies, device, amp
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.channels_last = device.type == "cuda"
        self.reset()

    def reset(self, totals: tuple | None = None) -> None:
        """Zero the running sums (or continue ``totals``: loss sum, correct count of an epoch resumed mid-way)."""
        dev = self.device
        self.loss_sum = torch.zeros((), device=dev) if totals is None else totals[0].to(dev).clone()
        self.correct = torch.zeros((), device=dev, dtype=torch.long) if totals is None else totals[1].to(dev).clone()
        self.first_bad = torch.full((), -1, device=dev, dtype=torch.long)  # first step with a non-finite loss
        self.steps = torch.zeros((), device=dev, dtype=torch.long)

    def body(self, idx: torch.Tensor, zero_grad: bool = True) -> None:
        batch, target = virtual_batch(self.images, self.labels, idx, self.copies, self.device)
        batch = scale(batch)
        flip = torch.rand(len(idx), device=self.device) < 0.5
        batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        if self.stain:
            batch = hed_jitter(batch, self.stain)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            logits = self.model(batch)
            loss = self.loss_fn(logits.float(), target)
        if zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        loss = loss.detach()
        bad = ~torch.isfinite(loss) & (self.first_bad < 0)
        self.first_bad.copy_(torch.where(bad, self.steps, self.first_bad))
        self.loss_sum += loss * len(idx)
        self.correct += (logits.detach().argmax(1) == target).sum()
        self.steps += 1

    def __call__(self, idx: torch.Tensor) -> None:
        self.body(idx)

    def drops_last(self) -> bool:
        """Whether an epoch leaves out its last incomplete batch (only a captured step needs whole ones)."""
        return False


class CapturedStep(TrainStep):
    """The same step captured once as a CUDA graph, then replayed with each batch's indices copied in."""

    captured = True

    def __init__(self, model, optimizer, scaler, images, labels, copies, device, amp, *, batch_size: int, stain=0.0):
        why = why_not_captured(device, scaler, images)
        if why is not None:
            raise ValueError(f"a step cannot be captured here: {why}")
        super().__init__(model, optimizer, scaler, images, labels, copies, device, amp, stain)
        self.batch_size = batch_size
        self.static_idx = torch.zeros(batch_size, dtype=torch.long, device=self.images.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0
        self.side = torch.cuda.Stream(self.device)

    def reset(self, totals: tuple | None = None) -> None:
        if getattr(self, "graph", None) is None:
            super().reset(totals)
            return
        # the graph reads and writes these very tensors: refill them in place
        loss_sum, correct = (0, 0) if totals is None else (totals[0].to(self.device), totals[1].to(self.device))
        self.loss_sum.copy_(torch.as_tensor(loss_sum, device=self.device, dtype=self.loss_sum.dtype))
        self.correct.copy_(torch.as_tensor(correct, device=self.device, dtype=self.correct.dtype))
        self.first_bad.fill_(-1)
        self.steps.fill_(0)

    def __call__(self, idx: torch.Tensor) -> None:
        if len(idx) != self.batch_size:
            raise ValueError(f"a captured step takes batches of {self.batch_size}, not {len(idx)}")
        self.static_idx.copy_(idx, non_blocking=True)
        if self.graph is not None:
            self.graph.replay()
            return
        if self.warm < WARMUP_STEPS:  # real steps, eager, on a side stream as capture requires
            self.side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.side):
                self.body(self.static_idx)
            torch.cuda.current_stream(self.device).wait_stream(self.side)
            self.warm += 1
            return
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # backward then makes its gradients in the graph's pool
        with torch.cuda.graph(graph):
            self.body(self.static_idx, zero_grad=False)
        self.graph = graph
        graph.replay()  # capture records the step; this runs it
        log.info("training step captured as a CUDA graph after %d eager steps", WARMUP_STEPS)

    def drops_last(self) -> bool:
        return True


def why_not_captured(device: torch.device, scaler, images: torch.Tensor) -> str | None:
    """Why the step cannot run as a CUDA graph here, or None where it can."""
    if device.type != "cuda":
        return "no CUDA device"
    if scaler.is_enabled():
        return "float16 autocast needs a loss scaler, which reads back every step"
    if images.device.type != "cuda":
        # the gather would run on the host once, at capture, and every replay would train on that one batch
        return "the training images are kept in host memory (too large for the GPU), and a graph gathers on the GPU"
    return None


def make_step(
    model,
    optimizer,
    scaler,
    images,
    labels,
    copies,
    device,
    amp,
    *,
    mode: str = "eager",
    batch_size: int = 16,
    stain: float = 0.0,
) -> TrainStep:
    """``mode`` eager, or cuda_graph (eager, with the reason logged, where a graph cannot run); ``stain``: σ of
    the HED jitter, 0 for none."""
    if mode == "cuda_graph":
        why = why_not_captured(device, scaler, images)
        if why is None:
            return CapturedStep(
                model, optimizer, scaler, images, labels, copies, device, amp, batch_size=batch_size, stain=stain
            )
        (log.info if device.type != "cuda" else log.warning)("train.step cuda_graph: %s; the step runs eagerly", why)
    elif mode != "eager":
        raise ValueError(f"unknown train.step {mode!r}; use eager or cuda_graph")
    return TrainStep(model, optimizer, scaler, images, labels, copies, device, amp, stain)
