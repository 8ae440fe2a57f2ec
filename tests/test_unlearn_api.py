"""``oblivio.unlearn``: bad requests are refused with one clear OblivioError, and the original model is never touched."""
import hashlib

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from oblivio import OblivioError, build_model, make_split, unlearn
from oblivio.scenarios import RandomSubset


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def row_hashes(data):
    return {hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest() for row in data.tensors[0]}


class NaNModel(nn.Module):
    """Outputs NaN logits (a corrupt model)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


def test_empty_forget_set_is_refused(splits, original):
    split = splits["class"]
    empty = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(OblivioError, match="empty forget set"):
        unlearn(original("class"), forget=empty, retain=split.retain, third_party=split.third_party)


def test_forget_labels_the_model_does_not_have_are_refused(splits, original):
    split = splits["class"]
    x, y = split.forget.tensors
    with pytest.raises(OblivioError, match="class 12.*classes 0..9"):
        unlearn(original("class"), forget=TensorDataset(x, torch.full_like(y, 12)), third_party=split.third_party)
    with pytest.raises(OblivioError, match="forgotten class 10 does not exist"):
        unlearn(original("class"), forget=split.forget, third_party=split.third_party, forget_classes=(10,))


def test_shape_mismatch_between_model_and_data_is_refused(splits, original):
    split = splits["class"]
    wide = TensorDataset(torch.zeros(5, 1, 28, 28), torch.zeros(5, dtype=torch.long))
    with pytest.raises(OblivioError, match="does not accept inputs of shape"):
        unlearn(original("class"), forget=wide, third_party=split.third_party)
    with pytest.raises(OblivioError, match="outputs shape .* 10 classes"):
        unlearn(build_model("mlp", (1, 8, 8), 5, seed=0), split=split)
    with pytest.raises(OblivioError, match="third-party set has inputs of shape"):
        unlearn(original("class"), forget=split.forget, third_party=wide)


def test_third_party_pool_overlapping_the_training_data_is_refused(splits, original):
    split = splits["class"]
    leaky = torch.utils.data.ConcatDataset([split.third_party, TensorDataset(*[t[:3] for t in split.retain.tensors])])
    with pytest.raises(OblivioError, match="shares 3 sample"):
        unlearn(original("class"), split=split, third_party=leaky)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digits_pools_have_no_accidental_duplicates(digits, seed):
    """The default split's third-party pool never collides with the training pool, so real requests are not refused."""
    split = make_split(digits, RandomSubset(fraction=0.1), seed=seed)
    assert not row_hashes(split.third_party) & row_hashes(split.train)


def test_nan_during_unlearning_stops_and_keeps_the_original(splits, original):
    model = original("class")
    before = state(model)
    with pytest.raises(OblivioError, match=r"method 'dm'.*(NaN|nan|inf).*original model is kept"):
        unlearn(model, split=splits["class"], method="dm", lr=1e30, optimizer="sgd")
    with pytest.raises(OblivioError, match=r"method 'ga'.*(NaN|nan|inf)"):
        unlearn(model, split=splits["class"], method="ga", lr=1e30)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_model_that_outputs_nan_is_refused(splits):
    with pytest.raises(OblivioError, match="outputs NaN/inf on the forget set"):
        unlearn(NaNModel(), split=splits["class"], method="dm")


def test_unknown_method_option_or_missing_data_is_refused(splits, original):
    split = splits["class"]
    with pytest.raises(OblivioError, match="unknown unlearning method 'nope'.*dm"):
        unlearn(original("class"), split=split, method="nope")
    with pytest.raises(OblivioError, match="has no option warp"):
        unlearn(original("class"), split=split, method="dm", warp=9)
    with pytest.raises(OblivioError, match="'dm' needs a non-empty third-party set"):
        unlearn(original("class"), forget=split.forget, retain=split.retain, method="dm")
    with pytest.raises(OblivioError, match="'retrain' needs a non-empty retain set"):
        unlearn(original("class"), forget=split.forget, method="retrain")


def bn1d_net(split, seed=0):
    """A user's MLP with BatchNorm1d (not a registered model), trained on ``split.train``."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    x, y = split.train.tensors
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def test_one_sample_batches_use_batchnorm_running_statistics():
    from oblivio.models import running_stats_for_single_samples

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)).train()
    bn = net[1]
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        net(torch.randn(1, 4))
    with running_stats_for_single_samples(net):
        before, x = bn.running_mean.clone(), torch.randn(1, 4)
        one = net(x)
        assert torch.equal(bn.running_mean, before) and bn.training  # running statistics, mode restored
        assert torch.allclose(one, net.eval()(x))
        net.train()
        net(torch.randn(2, 4))  # a real batch: batch statistics, running ones updated
        assert not torch.equal(bn.running_mean, before)
    assert not bn._forward_pre_hooks and not bn._forward_hooks


@pytest.mark.parametrize("size", ["one", "batch+1"])
def test_every_method_takes_one_sample_batches_on_a_batchnorm1d_model(size, splits):
    """A one-sample deletion request, and a forget set one over a batch multiple (129 digits at batch 128),
    on a user model with BatchNorm1d: PyTorch refuses one-sample batches in train mode; no method may crash."""
    from oblivio import available_methods

    split = splits["random"]
    net = bn1d_net(split)
    before = state(net)
    forget = TensorDataset(*(t[:1] for t in split.forget.tensors)) if size == "one" else split.forget
    assert size == "one" or len(forget) == 129
    for method in available_methods():
        options = {"epochs": 2} if method == "retrain" else {}
        result = unlearn(net, forget, split.retain, split.third_party, method=method, num_classes=10,
                         seed=0, verify=False, **options)
        assert all(torch.isfinite(p).all() for p in result.model.parameters()), method
        assert not any(m._forward_pre_hooks or m._forward_hooks for m in result.model.modules()), method
    assert all(torch.equal(v, state(net)[k]) for k, v in before.items())
