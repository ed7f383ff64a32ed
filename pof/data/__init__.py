"""Data sets and loaders (needs the ``[data]`` extra: numpy, pillow, scikit-learn, tqdm).

Formats are detected from ``path_or_name``: ``"digits"`` (scikit-learn), an ImageFolder
directory (``<root>/{train,val,test}/<class>/<image>``), a tar archive of one, a CIFAR-10/100
python-pickle directory, or an IDX (MNIST / Fashion-MNIST) directory.

Small images (H, W <= 64) are decoded once into a uint8 N×C×H×W array, cached as ``.npz`` and
served by an in-memory loader that augments whole batches on tensors (airbench style).
Larger images stream from disk through a torch ``DataLoader`` with PIL transforms.
"""

from ..errors import DataError
from .datasets import ArrayDataset, Dataset, DataSpec, StreamingImageFolder
from .load import load_dataset
from .loaders import make_loader

__all__ = ["ArrayDataset", "DataError", "DataSpec", "Dataset", "StreamingImageFolder",
           "load_dataset", "make_loader"]
