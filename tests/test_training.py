"""Models and training: registry, shapes, determinism, the retrain gold standard."""
import pytest
import torch
from torch import nn

from oblivio import OblivioError, TrainConfig, accuracy, build_model, retrain, train
from oblivio.models import check_compatible


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet18"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_models_accept_small_images(arch, shape):
    model = build_model(arch, shape, 7, seed=0)
    model.eval()
    assert model(torch.zeros(2, *shape)).shape == (2, 7)


def test_unknown_model_is_named():
    with pytest.raises(OblivioError, match="unknown model 'vgg99'"):
        build_model("vgg99", (1, 8, 8), 10)


def test_shape_and_class_mismatch_are_clear():
    model = build_model("mlp", (1, 8, 8), 10)
    with pytest.raises(OblivioError, match="does not accept inputs of shape"):
        check_compatible(model, (1, 28, 28), 10)
    with pytest.raises(OblivioError, match="data has 5 classes"):
        check_compatible(model, (1, 8, 8), 5)


def test_training_is_deterministic_for_a_seed(splits):
    data = splits["random"].train
    a, ha = train("mlp", data, 10, TrainConfig(seed=5, epochs=3))
    b, hb = train("mlp", data, 10, TrainConfig(seed=5, epochs=3))
    c, _ = train("mlp", data, 10, TrainConfig(seed=6, epochs=3))
    assert ha.loss == hb.loss
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))


def test_retrain_on_digits_reaches_95_percent(splits):
    split = splits["class"]
    model, history = retrain("mlp", split.retain, 10)
    assert accuracy(model, split.test) >= 0.95 * 0.9  # 10% of the test set is the forgotten class
    keep = split.test.tensors[1] != 3
    retained_test = torch.utils.data.TensorDataset(split.test.tensors[0][keep], split.test.tensors[1][keep])
    assert accuracy(model, retained_test) >= 0.95
    assert accuracy(model, split.forget) == 0.0  # never saw class 3
    assert history.loss[-1] < history.loss[0]


def test_random_retrain_test_accuracy(splits, original):
    split = splits["random"]
    assert accuracy(original("random"), split.test) >= 0.95
    assert accuracy(retrain("mlp", split.retain, 10)[0], split.test) >= 0.95


def test_retrain_of_a_custom_module_reinitialises_it(splits):
    custom = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    before = custom[1].weight.clone()
    model, _ = retrain(custom, splits["random"].retain, 10, TrainConfig(epochs=2))
    assert torch.equal(custom[1].weight, before)  # the user's module is untouched
    assert accuracy(model, splits["random"].test) > 0.8


def test_bad_training_options_and_nan_loss(splits):
    with pytest.raises(OblivioError, match="unknown optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(OblivioError, match="NaN/inf"):
        train("mlp", splits["random"].train, 10, TrainConfig(lr=1e12, epochs=2, optimizer="adam"))
    with pytest.raises(OblivioError, match="empty dataset"):
        train("mlp", torch.utils.data.TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), 10)


def test_augment_crop_and_flip_are_seeded_and_keep_shapes():
    from oblivio import augment

    x = torch.rand(16, 3, 6, 6)
    a = augment.batch_transform("crop:2+flip", (3, 6, 6), 0)
    b = augment.batch_transform("flip,crop:2", (3, 6, 6), 0)
    ya, yb = a(x), b(x)
    assert ya.shape == x.shape and torch.equal(ya, yb)  # same seed, same draws
    assert not torch.equal(ya, x)
    flipped = augment.batch_transform("flip", (3, 6, 6), 1)(x)
    for xi, fi in zip(x, flipped):  # each image is itself or its mirror
        assert torch.equal(fi, xi) or torch.equal(fi, xi.flip(-1))
    cropped = augment.random_crop(torch.ones(8, 1, 5, 5), 2, torch.Generator().manual_seed(0))
    assert cropped.sum((1, 2, 3)).min() >= 9  # a window of the padded image: at least a 3x3 block of ones


@pytest.mark.parametrize("spec, message", [("crop", "crop needs a padding"), ("rotate", "bad part 'rotate'"),
                                           ("flip+flip", "bad part 'flip'"), ("crop:0", "at least 1 pixel")])
def test_bad_augment_specs_are_one_line(spec, message):
    with pytest.raises(OblivioError, match=message):
        TrainConfig(augment=spec)


def test_augment_refuses_non_images_and_leaves_the_default_run_alone(splits):
    from torch.utils.data import TensorDataset

    flat = TensorDataset(torch.rand(32, 64), torch.arange(32) % 4)
    with pytest.raises(OblivioError, match="need image inputs"):
        train("mlp", flat, 4, TrainConfig(epochs=1, augment="flip"))
    data = splits["random"].train
    plain, hp = train("mlp", data, 10, TrainConfig(seed=3, epochs=2))
    none, hn = train("mlp", data, 10, TrainConfig(seed=3, epochs=2, augment="none"))
    aug, ha = train("mlp", data, 10, TrainConfig(seed=3, epochs=2, augment="crop:1+flip"))
    aug2, ha2 = train("mlp", data, 10, TrainConfig(seed=3, epochs=2, augment="crop:1+flip"))
    assert hp.loss == hn.loss and ha.loss == ha2.loss and ha.loss != hp.loss
    assert TrainConfig(augment="flip+crop:4").augment == "crop:4+flip"
