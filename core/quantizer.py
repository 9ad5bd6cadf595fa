"""A vector quantizer for training that drops into a diffusers VQModel's `quantize` slot.

diffusers' VectorQuantizer learns its codebook by gradient and, in its default legacy mode, weighs the
commitment term wrongly (taming's bug); small models then collapse onto a few codes. This one keeps the
same interface and parameter (`embedding.weight`, `get_codebook_entry`, `vq_embed_dim`, the forward's
`(z_q, loss, (None, None, indices))`) and adds what makes small codebooks work:

- codebook = exponential moving average of the encoder outputs assigned to each code (no gradient);
- k-means initialisation from the first training batch;
- dead-code restart: a code whose EMA usage falls below a threshold is moved onto an encoder output;
- loss = beta * ||z - sg(e)||^2 only (the commitment term, correctly weighted).

Its extra state (EMA statistics) lives in non-persistent buffers, so `state_dict()` and
`save_pretrained` give exactly a plain diffusers VQModel; trainers checkpoint `ema_state()` beside it.
Under torch.distributed the statistics are summed over processes, so every process keeps the same codebook.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from diffusers.models.autoencoders.vae import VectorQuantizer

from .dataset import mix_seed


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather(x: torch.Tensor) -> torch.Tensor:
    """All processes' `x` concatenated in rank order (x itself when not distributed)."""
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _sum(x: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(x)
    return x


class EMAVectorQuantizer(VectorQuantizer):
    """Vector quantizer with EMA codebook updates, k-means init and dead-code restart.

    Args:
        num_codes (`int`): codebook size K.
        embed_dim (`int`): channels of a codebook vector (the VQModel's vq_embed_dim).
        beta (`float`, defaults to 0.25): commitment weight; loss = beta * mean((z - sg(e))^2).
        decay (`float`, defaults to 0.99): EMA decay of the code counts and sums.
        eps (`float`, defaults to 1e-5): Laplace smoothing of the counts.
        dead_code_threshold (`float`, defaults to 1.0): a code whose EMA count (vectors per global batch) is
            below this is restarted on a random encoder output of the batch; 0 disables restarts.
        kmeans_init (`bool`, defaults to True): set the codebook by k-means on the first training batch.
        kmeans_iters (`int`, defaults to 10): Lloyd iterations of that k-means.
        seed (`int`, defaults to 0): seed of the k-means and restart draws (with the update counter).
    """

    def __init__(self, num_codes: int, embed_dim: int, beta: float = 0.25, decay: float = 0.99, eps: float = 1e-5,
                 dead_code_threshold: float = 1.0, kmeans_init: bool = True, kmeans_iters: int = 10,
                 seed: int = 0) -> None:
        super().__init__(num_codes, embed_dim, beta=beta, legacy=False)
        self.embedding.weight.requires_grad_(False)
        self.decay, self.eps, self.dead_code_threshold = decay, eps, dead_code_threshold
        self.kmeans_iters, self.seed = kmeans_iters, seed
        self.cluster_size: torch.Tensor
        self.embed_sum: torch.Tensor
        self.initialized: torch.Tensor
        self.updates: torch.Tensor
        self.register_buffer("cluster_size", torch.zeros(num_codes), persistent=False)
        self.register_buffer("embed_sum", self.embedding.weight.detach().clone(), persistent=False)
        self.register_buffer("initialized", torch.tensor(not kmeans_init), persistent=False)
        self.register_buffer("updates", torch.tensor(0, dtype=torch.int64), persistent=False)

    @classmethod
    def replacing(cls, quantizer: VectorQuantizer, **kwargs: object) -> EMAVectorQuantizer:
        """A new EMA quantizer with `quantizer`'s codebook (k-means init only if asked for)."""
        new = cls(quantizer.n_e, quantizer.vq_embed_dim, **kwargs)  # type: ignore[arg-type]
        with torch.no_grad():
            new.embedding.weight.copy_(quantizer.embedding.weight)
            new.embed_sum.copy_(quantizer.embedding.weight)
        return new.to(quantizer.embedding.weight.device)

    def ema_state(self) -> dict[str, torch.Tensor]:
        return {"cluster_size": self.cluster_size, "embed_sum": self.embed_sum,
                "initialized": self.initialized, "updates": self.updates}

    def load_ema_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, value in state.items():
                getattr(self, name).copy_(value)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        z_nhwc = z.permute(0, 2, 3, 1).contiguous()
        flat = z_nhwc.view(-1, self.vq_embed_dim)
        if self.training and not bool(self.initialized):
            self._kmeans(flat.detach())
        # The same distance and argmin as diffusers' quantizer, so indices agree with the saved model's.
        indices = torch.argmin(torch.cdist(flat, self.embedding.weight), dim=1)
        z_q = self.embedding(indices).view(z_nhwc.shape)
        loss = self.beta * torch.mean((z_q.detach() - z_nhwc) ** 2)
        if self.training:
            self._ema_update(flat.detach(), indices)
        z_q = z_nhwc + (z_q - z_nhwc).detach()
        return z_q.permute(0, 3, 1, 2).contiguous(), loss, (None, None, indices)

    @torch.no_grad()
    def _kmeans(self, flat: torch.Tensor) -> None:
        data = _gather(flat.float())
        gen = torch.Generator().manual_seed(mix_seed(self.seed, -1))
        k = self.n_e
        pick = (torch.randperm(len(data), generator=gen)[:k] if len(data) >= k
                else torch.randint(len(data), (k,), generator=gen))
        centers = data[pick.to(data.device)].clone()
        counts = torch.zeros(k, device=data.device)
        for _ in range(self.kmeans_iters):
            assign = torch.argmin(torch.cdist(data, centers), dim=1)
            counts = torch.bincount(assign, minlength=k).float()
            sums = torch.zeros_like(centers).index_add_(0, assign, data)
            used = counts > 0
            centers[used] = sums[used] / counts[used, None]
        self.embedding.weight.copy_(centers)
        self.cluster_size.copy_(counts)
        self.embed_sum.copy_(centers * self.cluster_size[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        counts = _sum(torch.bincount(indices, minlength=self.n_e).to(flat.dtype))
        sums = _sum(torch.zeros_like(self.embed_sum).index_add_(0, indices, flat))
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.n_e * self.eps) * total
        self.embedding.weight.copy_(self.embed_sum / smoothed[:, None])
        if self.dead_code_threshold > 0:
            dead = self.cluster_size < self.dead_code_threshold
            if bool(dead.any()):
                data = _gather(flat)
                gen = torch.Generator().manual_seed(mix_seed(self.seed, int(self.updates)))
                pick = torch.randint(len(data), (int(dead.sum()),), generator=gen).to(data.device)
                self.embedding.weight[dead] = data[pick]
                self.cluster_size[dead] = self.dead_code_threshold
                self.embed_sum[dead] = data[pick] * self.dead_code_threshold
        self.updates.add_(1)
