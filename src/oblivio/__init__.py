"""oblivio: machine unlearning for PyTorch classifiers.

    import oblivio
    data = oblivio.load_dataset("digits")
    split = oblivio.make_split(data, oblivio.ClassForget((3,)), seed=0)
    model, _ = oblivio.train("mlp", split.train, data.num_classes, seed=0)
    result = oblivio.unlearn(model, split=split, method="dm")
    print(oblivio.evaluate(result.model, split))
"""
__version__ = "0.1.0"

from .checkpoint import load_checkpoint, save_checkpoint
from .data import Dataset, DatasetInfo, available_datasets, from_arrays, load_dataset
from .errors import OblivioError
from .methods import UnlearnData, Unlearner, UnlearnResult, available_methods, get_method, register
from .models import available_models, build_model
from .scenarios import Backdoor, ClassForget, RandomSubset, Split, load_split, make_split
from .training import TrainConfig, accuracy, attack_success_rate, evaluate, retrain, train
from .unlearning import unlearn

__all__ = [
    "Backdoor", "ClassForget", "Dataset", "DatasetInfo", "OblivioError", "RandomSubset", "Split", "TrainConfig",
    "UnlearnData", "UnlearnResult", "Unlearner", "accuracy", "attack_success_rate", "available_datasets",
    "available_methods", "available_models", "build_model", "evaluate", "from_arrays", "get_method",
    "load_checkpoint", "load_dataset", "load_split", "make_split", "register", "retrain", "save_checkpoint",
    "train", "unlearn",
]
