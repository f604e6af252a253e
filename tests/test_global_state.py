"""Library code leaves torch's global random state as it found it (it seeds generators or a fork)."""

from __future__ import annotations

import torch


def test_writing_a_random_model_keeps_the_global_rng(tmp_path):
    from networks.models import _tiny_configs, write_random_model

    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    write_random_model(tmp_path / "model", _tiny_configs(), seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_training_the_feature_net_keeps_the_global_rng():
    from training.features import train_feature_net

    g = torch.Generator().manual_seed(0)
    latents, labels = torch.randn(4, 3, 4, 4, 4, generator=g), torch.tensor([0, 1, 0, 1])
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    net_a, _ = train_feature_net(latents, labels, steps=2, batch_size=2, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    net_b, _ = train_feature_net(latents, labels, steps=2, batch_size=2, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(net_a.state_dict().values(), net_b.state_dict().values()))
