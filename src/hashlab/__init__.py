"""hashlab: train → encode → index → search → evaluate compact image codes.

The small public API; the subpackages (``hashlab.data``, ``.models``, ``.losses``, ``.index``,
``.eval``, ``.train``) hold the rest.
"""

from hashlab.config import RunConfig, load_config
from hashlab.encode import Codes, TrainedRun
from hashlab.errors import CheckpointError, ConfigError, DataError, HashlabError
from hashlab.eval.metrics import retrieval_metrics
from hashlab.eval.protocols import evaluate_run
from hashlab.index.codes import hamming_distances, pack_bits, unpack_bits
from hashlab.models import build_model
from hashlab.train.engine import Trainer, train

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "Codes", "ConfigError", "DataError", "HashlabError", "RunConfig",
    "TrainedRun", "Trainer", "build_model", "evaluate_run", "hamming_distances", "load_config",
    "pack_bits", "retrieval_metrics", "train", "unpack_bits", "__version__",
]
