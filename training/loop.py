"""What every plugin trainer's loop shares: the learning rate (linear warm-up, cosine decay to a floor), resuming
from RUN/<name>.pt, the optimizer step (gradients clipped to norm 1), the loss log every 25 steps and a checkpoint
every two minutes and at the end (written beside and renamed, so an interruption never leaves half a file)."""

import math
import os
import time

import numpy as np
import torch


def learning_rate(base, step, total, warmup, floor):
    return base * min(1.0, (step + 1) / warmup) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / total)))


class Loop:
    def __init__(self, path, net, opt, total):
        self.path, self.net, self.opt, self.total = path, net, opt, total
        self.step, self.losses = 0, []
        if os.path.exists(path):
            saved = torch.load(path)
            net.load_state_dict(saved["net"])
            opt.load_state_dict(saved["opt"])
            self.step = saved["step"]
            print(f"resumed at step {self.step}", flush=True)
        self.started = self.last_save = time.time()

    def running(self):
        return self.step < self.total

    def set_lr(self, base, warmup, floor):
        lr = learning_rate(base, self.step, self.total, warmup, floor)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def update(self, loss, lr):
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        self.losses.append(loss.item())
        if self.step % 25 == 0:
            print(f"step {self.step} loss {np.mean(self.losses):.4f} lr {lr:.2e} {time.time() - self.started:.0f}s",
                  flush=True)
            self.losses = []
        if time.time() - self.last_save > 120 or self.step == self.total:
            torch.save({"net": self.net.state_dict(), "opt": self.opt.state_dict(), "step": self.step},
                       self.path + ".tmp")
            os.replace(self.path + ".tmp", self.path)
            self.last_save = time.time()
