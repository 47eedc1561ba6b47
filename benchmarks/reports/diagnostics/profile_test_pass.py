"""torch.profiler table (by op and input shape) of the main job's test pass on a trained checkpoint, one thread: where
speculative inference spends its time (speed_cpu.md sections 1d and 5). Run from the repository root:

    python benchmarks/reports/diagnostics/profile_test_pass.py saved/SpecGRPP-Dec-05-2026_17-23-59.pth \
        > benchmarks/reports/diagnostics/profile_test_pass.txt
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from recbole_specgr import compat  # noqa: E402,F401  (must precede recbole imports)
from recbole.data import data_preparation  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from recbole_specgr.compat import load_checkpoint  # noqa: E402
from recbole_specgr.config import config_from_saved  # noqa: E402
from recbole_specgr.utils import create_dataset, get_model, get_trainer  # noqa: E402

torch.set_num_threads(1)
path = sys.argv[1]
config = config_from_saved(load_checkpoint(path, map_location="cpu")["config"], show_progress=False)
init_seed(config["seed"], config["reproducibility"])
init_logger(config)
_, valid_data, test_data = data_preparation(config, create_dataset(config))
model = get_model(config["model"])(config, valid_data._dataset)
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
trainer.load_model(path)
trainer.tune_threshold(valid_data)  # the γ chosen on validation, as the main job
start = time.perf_counter()
trainer.evaluate(test_data, load_best_model=False)
print(f"test pass without the profiler: {time.perf_counter() - start:.1f} s")
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    trainer.evaluate(test_data, load_best_model=False)
print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25,
                                                        max_name_column_width=50, max_shapes_column_width=100))
