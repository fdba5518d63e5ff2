"""A beta-VAE for sprites: the model whose latent factors notebook 07 explains.

A variational auto-encoder (Kingma & Welling, ICLR 2014) learns an encoder
``q(z | x) = N(mu(x), diag sigma(x)^2)`` and a decoder ``p(x | z)`` by maximising the evidence
lower bound (ELBO) of each image::

    log p(x) >= E_q[log p(x | z)] - KL(q(z | x) || N(0, I))

The beta-VAE (Higgins et al., ICLR 2017) weighs the KL term by ``beta > 1``, which pushes the
posterior towards the factorised prior and the latent dimensions towards separate factors of
variation. The KL of a diagonal Gaussian splits into one term per dimension::

    KL_i = 1/2 (mu_i^2 + sigma_i^2 - log sigma_i^2 - 1)

which is the "loss of the factor distribution" that :func:`vismap.explain.factor_cam` can
differentiate. The optional total-correlation penalty is beta-TCVAE's (Chen et al., NeurIPS
2018), estimated by minibatch-weighted sampling.

The encoder and decoder follow Burgess et al. (2018): four 4x4 stride-2 convolutions with 32
channels, two fully connected layers of 256, ten latent dimensions, a Bernoulli decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SpritesVAE",
    "BroadcastVAE",
    "SpatialBroadcastDecoder",
    "kl_per_dim",
    "total_correlation",
    "vae_loss",
    "LATENTS",
]

LATENTS = 10  # latent dimensions of the course's VAE


class SpritesVAE(nn.Module):
    """Convolutional VAE for ``(n, 1, 64, 64)`` sprites.

    ``forward(x)`` is the *encoder*: it returns the posterior's ``(mu, logvar)``, each
    ``(n, latents)``, so that any explanation method of the course (whose target reads the
    model's output) explains a latent factor exactly as it explains a class score.
    ``decode(z)`` returns the decoder's pixel logits; ``reconstruct(x)`` the mean image.

    Layers: ``encoder.0 .. encoder.7`` are conv/ReLU pairs at 32x32, 16x16, 8x8 and 4x4
    (``encoder.3``, the ReLU after the 16x16 convolution, is where factor maps look by default).
    """

    def __init__(self, latents: int = LATENTS, channels: int = 32, hidden: int = 256):
        super().__init__()
        self.latents = latents
        c = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1),
            nn.ReLU(),  # 32x32
            nn.Conv2d(c, c, 4, 2, 1),
            nn.ReLU(),  # 16x16
            nn.Conv2d(c, c, 4, 2, 1),
            nn.ReLU(),  # 8x8
            nn.Conv2d(c, c, 4, 2, 1),
            nn.ReLU(),  # 4x4
            nn.Flatten(),
            nn.Linear(c * 16, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * latents),
        )
        self.decoder: nn.Module = nn.Sequential(
            nn.Linear(latents, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, c * 16),
            nn.ReLU(),
            nn.Unflatten(1, (c, 4, 4)),
            nn.ConvTranspose2d(c, c, 4, 2, 1),
            nn.ReLU(),  # 8x8
            nn.ConvTranspose2d(c, c, 4, 2, 1),
            nn.ReLU(),  # 16x16
            nn.ConvTranspose2d(c, c, 4, 2, 1),
            nn.ReLU(),  # 32x32
            nn.ConvTranspose2d(c, 1, 4, 2, 1),  # 64x64 logits
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode: the posterior ``(mu, logvar)`` of ``x (n, 1, 64, 64)``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 64, 64):
            raise ValueError(
                f"SpritesVAE expects images of shape (n, 1, 64, 64), got {tuple(x.shape)}"
            )
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits ``(n, 1, 64, 64)`` of ``p(x | z)``."""
        return self.decoder(z)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean reconstruction ``sigmoid(decode(mu(x)))``, in [0, 1]."""
        return torch.sigmoid(self.decode(self(x)[0]))


class SpatialBroadcastDecoder(nn.Module):
    """The Spatial Broadcast Decoder (Watters et al. 2019, *Spatial Broadcast Decoder: A Simple
    Architecture for Learning Disentangled Representations in VAEs*), for 64x64 images.

    The code ``z (n, d)`` is *tiled* over a ``grid x grid`` lattice and two fixed coordinate
    channels ``(u, v) in [-1, 1]^2`` are appended, so every location sees the same z and knows
    where it is::

        h_0[:, :, a, b] = (z, u_b, v_a)        (n, d + 2, grid, grid)
        h_{l+1} = ReLU(conv3x3(h_l))            stride 1, padding 1, ``channels`` each
        logits  = convT4x4/2(h_L)               (n, 1, 2 grid, 2 grid)

    A position is then a *function of the coordinates* the decoder reads off z, not a pattern it
    must draw with up-sampling filters; the paper shows that this prior is what lets a VAE give
    each object's x and y their own latent. Here the lattice is 32x32 and one transposed
    convolution doubles it to 64x64 (the paper broadcasts at full size, which costs four times
    the convolutions).
    """

    def __init__(self, latents: int = LATENTS, channels: int = 16, grid: int = 32, depth: int = 3):
        super().__init__()
        self.grid = grid
        v, u = torch.meshgrid(
            torch.linspace(-1, 1, grid), torch.linspace(-1, 1, grid), indexing="ij"
        )
        self.coords: torch.Tensor
        self.register_buffer("coords", torch.stack([u, v])[None], persistent=False)
        layers: list[nn.Module] = []
        width = latents + 2
        for _ in range(depth):
            layers += [nn.Conv2d(width, channels, 3, 1, 1), nn.ReLU()]
            width = channels
        layers.append(nn.ConvTranspose2d(channels, 1, 4, 2, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits ``(n, 1, 2 grid, 2 grid)`` of the codes ``z (n, latents)``."""
        n, g = z.shape[0], self.grid
        tiled = z[:, :, None, None].expand(n, z.shape[1], g, g)
        coords = self.coords.to(z.dtype).expand(n, 2, g, g)
        return self.net(torch.cat([tiled, coords], dim=1))


class BroadcastVAE(SpritesVAE):
    """:class:`SpritesVAE`'s encoder (the same layers, ``encoder.3`` for factor maps) with a
    :class:`SpatialBroadcastDecoder`: the course's two-object VAE (``sprites2-vae``)."""

    def __init__(self, latents: int = LATENTS, channels: int = 32, hidden: int = 256):
        super().__init__(latents, channels, hidden)
        self.decoder = SpatialBroadcastDecoder(latents)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_i, sigma_i^2) || N(0, 1)) of every dimension, ``(n, latents)``:
    ``1/2 (mu^2 + exp(logvar) - logvar - 1)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp())


def total_correlation(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int
) -> torch.Tensor:
    """Minibatch-weighted estimate of TC = KL(q(z) || prod_i q(z_i)) (Chen et al. 2018):

    ``log q(z) ~ logsumexp_j log q(z | x_j) - log(N M)``, likewise per dimension; TC is the
    batch mean of ``log q(z) - sum_i log q(z_i)``.
    """
    m = z.shape[0]
    pair = _log_normal(z[:, None], mu[None], logvar[None])  # (m, m, latents)
    log_norm = math.log(dataset_size * m)
    log_qz = torch.logsumexp(pair.sum(2), dim=1) - log_norm
    log_prod = (torch.logsumexp(pair, dim=1) - log_norm).sum(1)
    return (log_qz - log_prod).mean()


def vae_loss(
    vae: SpritesVAE,
    x: torch.Tensor,
    *,
    beta: float = 4.0,
    tc: float = 0.0,
    dataset_size: int = 737_280,
    capacity: float | None = None,
    gamma: float = 100.0,
) -> dict[str, torch.Tensor]:
    """The negative beta-ELBO of a batch (per image, in nats), with an optional TC penalty:

    ``loss = BCE(x, decode(z)) + beta * sum_i KL_i + tc * TC``, ``z = mu + sigma * eps``
    (the reparameterisation trick, so that the gradient flows through the sample).

    With ``capacity=C`` (nats) the KL term is Burgess et al.'s (2018, *Understanding
    disentangling in beta-VAE*, eq. 8) controlled capacity instead:
    ``loss = BCE + gamma * |sum_i KL_i - C| + tc * TC``; raising C slowly during training lets
    the factors that help the reconstruction most take the information first.

    Returns a dict with ``loss``, ``recon``, ``kl`` (summed over dimensions) and ``tc``.
    """
    mu, logvar = vae(x)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    recon = F.binary_cross_entropy_with_logits(vae.decode(z), x, reduction="sum") / x.shape[0]
    kl = kl_per_dim(mu, logvar).sum(1).mean()
    tcv = total_correlation(z, mu, logvar, dataset_size) if tc else torch.zeros(())
    prior = beta * kl if capacity is None else gamma * (kl - capacity).abs()
    return dict(loss=recon + prior + tc * tcv, recon=recon, kl=kl, tc=tcv)
