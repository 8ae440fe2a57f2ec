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
