"""The ml-100k main job's test pass (γ chosen on validation) timed at CPU_MAX_ROWS = 2,048 / 4,096 / 8,192 / one call,
two repeats, one thread (speed_cpu.md section 4). Run from the repository root after the main job:

    python benchmarks/reports/diagnostics/main_job_test_pass_by_max_rows.py saved/SpecGRPP-<date>.pth
"""
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
import time
import torch
torch.set_num_threads(1)
from recbole_specgr import compat  # noqa
from recbole.data import data_preparation
from recbole.utils import init_logger, init_seed
from recbole_specgr.compat import load_checkpoint
from recbole_specgr.config import config_from_saved
from recbole_specgr.utils import create_dataset, get_model, get_trainer
from recbole_specgr.inference import beam_search
path = sys.argv[1]
ck = load_checkpoint(path, map_location="cpu")
config = config_from_saved(ck["config"], show_progress=False, state="ERROR")
init_seed(config["seed"], config["reproducibility"]); init_logger(config)
ds = create_dataset(config); _, valid, test = data_preparation(config, ds)
model = get_model(config["model"])(config, valid._dataset)
tr = get_trainer(config["MODEL_TYPE"], config["model"])(config, model); tr.load_model(path)
tr.tune_threshold(valid)
for rep in range(2):
    for rows in (2048, 4096, 8192, 10**7):
        beam_search.CPU_MAX_ROWS = rows
        t = time.perf_counter(); r = tr.evaluate(test, load_best_model=False)
        print(rows, "test s %.1f" % (time.perf_counter() - t), r["recall@50"], flush=True)
