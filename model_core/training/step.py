"""One optimisation step: the masked L1 loss of the paper (eq. 20), mixed precision on a GPU."""

from __future__ import annotations

from ..device import autocast


def masked_l1(pred, target, valid):
    """Mean absolute error over the valid pixels of all bands (eq. 20 with nodata left out)."""
    mask = valid.unsqueeze(1).to(pred.dtype)
    count = mask.sum() * pred.shape[1]
    return ((pred - target).abs() * mask).sum() / count.clamp(min=1.0)


def train_step(model, optimizer, scaler, coarse, fine0, fine1, valid, device, amp_dtype):
    """One optimisation step on a batch: forward (autocast to ``amp_dtype`` on a GPU), the
    masked L1 loss, backward (through ``scaler`` when there is one) and the optimizer's
    update. Returns the loss tensor (float32, still on ``device``)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(amp_dtype, device):
        pred = model(coarse, fine0)
    loss = masked_l1(pred.float(), fine1, valid)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss
