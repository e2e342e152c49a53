r"""The paper's search controller: an RNN that predicts one component per step,
trained with PPO on the reward, with an exponential moving average of the
rewards as the baseline.

At each position of the token sequence (:class:`~acon_mm.search.space.SearchSpace`)
the LSTM cell reads the embedding of the previous choice and a softmax head of
that position's size gives the next. For a batch of sampled sequences with
rewards :math:`r_i` the update is PPO's clipped surrogate

.. math::

    L = -\frac{1}{n}\sum_i \min\big(\rho_i A_i,\;
        \mathrm{clip}(\rho_i, 1-\epsilon, 1+\epsilon) A_i\big)
        - c_H\, H, \qquad
    \rho_i = \frac{\pi_\theta(s_i)}{\pi_{\theta_\mathrm{old}}(s_i)},\quad
    A_i = r_i - b,

for ``ppo_epochs`` passes, then :math:`b \leftarrow \mu b + (1-\mu)\,\bar r`
(:math:`b` starts at the first batch's mean reward). Choices the paper leaves
open, made here: one LSTM layer of 64 units, embeddings of 32, Adam at
``lr=1e-3``, :math:`\epsilon=0.2`, 4 PPO epochs, :math:`\mu=0.9`, entropy weight
:math:`c_H=0.05` (at ``lr=3e-3`` and :math:`c_H=10^{-3}` the policy collapsed on
a planted toy reward within ~300 proposals, onto ReLU-like functions, and
then proposed only those).
"""
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ['Controller']


class Controller(nn.Module):
    """RNN controller over token sequences of the given vocabulary sizes.

    Args:
        vocab_sizes (Sequence[int]): the number of choices at each position.
        hidden (int): LSTM units.
        embed (int): embedding width of a choice.
        lr (float): Adam's learning rate.
        clip (float): PPO's :math:`\\epsilon`.
        ppo_epochs (int): passes over a batch per update.
        baseline_decay (float): :math:`\\mu` of the reward baseline.
        entropy_weight (float): :math:`c_H`.
        seed (int): seeds the weights and the sampling generator.
    """

    def __init__(self, vocab_sizes: Sequence[int], hidden: int = 64, embed: int = 32,
                 lr: float = 1e-3, clip: float = 0.2, ppo_epochs: int = 4,
                 baseline_decay: float = 0.9, entropy_weight: float = 0.05,
                 seed: int = 0):
        super().__init__()
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        if not self.vocab_sizes or min(self.vocab_sizes) < 1:
            raise ValueError(f'vocab_sizes must be positive, got {vocab_sizes}')
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # one table: the start symbol, then each position's choices
            self.offsets = [1]
            for v in self.vocab_sizes[:-1]:
                self.offsets.append(self.offsets[-1] + v)
            self.embedding = nn.Embedding(1 + sum(self.vocab_sizes), embed)
            self.cell = nn.LSTMCell(embed, hidden)
            self.heads = nn.ModuleList(nn.Linear(hidden, v) for v in self.vocab_sizes)
        self.hidden = hidden
        self.clip = clip
        self.ppo_epochs = ppo_epochs
        self.baseline_decay = baseline_decay
        self.entropy_weight = entropy_weight
        self.register_buffer('baseline', torch.zeros(()))
        self.register_buffer('num_updates', torch.zeros((), dtype=torch.long))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(seed)

    def _run(self, n: int, tokens: Tensor = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Sample ``n`` sequences (``tokens=None``) or score the given ones:
        ``(tokens (n, L), log-probabilities (n,), entropies (n,))``."""
        h = torch.zeros(n, self.hidden)
        c = torch.zeros(n, self.hidden)
        prev = torch.zeros(n, dtype=torch.long)  # the start symbol
        out, logp, ent = [], torch.zeros(n), torch.zeros(n)
        for i, head in enumerate(self.heads):
            h, c = self.cell(self.embedding(prev), (h, c))
            dist = torch.distributions.Categorical(logits=head(h))
            if tokens is None:
                t = torch.multinomial(dist.probs.detach(), 1, generator=self.generator)[:, 0]
            else:
                t = tokens[:, i]
            out.append(t)
            logp = logp + dist.log_prob(t)
            ent = ent + dist.entropy()
            prev = t + self.offsets[i]
        return torch.stack(out, 1), logp, ent

    @torch.no_grad()
    def sample(self, n: int) -> List[Tuple[int, ...]]:
        """``n`` token sequences drawn from the policy."""
        tokens, _, _ = self._run(n)
        return [tuple(int(v) for v in row) for row in tokens]

    def log_prob(self, sequences: Sequence[Sequence[int]]) -> Tensor:
        """The policy's log-probability of each sequence."""
        return self._run(len(sequences), torch.tensor(sequences, dtype=torch.long))[1]

    def update(self, sequences: Sequence[Sequence[int]], rewards: Sequence[float]) -> dict:
        """One PPO update on sampled ``sequences`` and their ``rewards``; returns
        the baseline used, the mean advantage and the last loss."""
        if len(sequences) != len(rewards) or not sequences:
            raise ValueError(f'{len(sequences)} sequences for {len(rewards)} rewards')
        tokens = torch.tensor([list(s) for s in sequences], dtype=torch.long)
        r = torch.tensor([float(v) for v in rewards])
        if int(self.num_updates) == 0:
            self.baseline.fill_(float(r.mean()))
        adv = r - self.baseline
        with torch.no_grad():
            old = self._run(len(tokens), tokens)[1]
        for _ in range(self.ppo_epochs):
            _, logp, ent = self._run(len(tokens), tokens)
            ratio = torch.exp(logp - old)
            surrogate = torch.min(ratio * adv,
                                  ratio.clamp(1 - self.clip, 1 + self.clip) * adv)
            loss = -surrogate.mean() - self.entropy_weight * ent.mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        used = float(self.baseline)
        self.baseline.mul_(self.baseline_decay).add_((1 - self.baseline_decay) * r.mean())
        self.num_updates += 1
        return dict(baseline=used, advantage=float(adv.mean()), loss=float(loss.detach()))

    def state(self) -> dict:
        """Everything a resumed search needs: weights, baseline, optimiser and
        the sampling generator."""
        return dict(model=self.state_dict(), optimizer=self.optimizer.state_dict(),
                    generator=self.generator.get_state())

    def load_state(self, state: dict) -> None:
        self.load_state_dict(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.generator.set_state(state['generator'])
