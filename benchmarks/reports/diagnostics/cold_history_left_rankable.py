"""ml-100k (eval_exclude_history: True, cold_start_items: release_year >= 1997): how many items each valid / test row's
user rated before the target that ``history_mask`` leaves rankable. The cold-start rule drops a cold item's
training-period ratings from the rows; until session 19 the mask was built after that drop, so those items stayed
rankable though MovieLens has no repeats (a review's script, kept to make the figure in main_job_cpu.md session 19).

    PYTHONPATH=<a package folder> python benchmarks/reports/diagnostics/cold_history_left_rankable.py
"""
import os, sys, tempfile, numpy as np, pandas as pd, torch
os.chdir(tempfile.mkdtemp()); sys.argv = ["x"]; torch.set_num_threads(1)
import recbole_specgr
from recbole_specgr.config import Config
from recbole_specgr.utils import create_dataset
from recbole.data import data_preparation
config = Config(model="SASRec", dataset="ml-100k", config_dict={"cache_dir": os.path.join(os.getcwd(), "cache"), "state": "ERROR",
                "show_progress": False, "eval_batch_size": 4096})
ds = create_dataset(config); _, valid, test = data_preparation(config, ds)
import importlib.util
src = os.path.join(os.path.dirname(importlib.util.find_spec("recbole").origin), "dataset_example", "ml-100k")
inter = pd.read_csv(f"{src}/ml-100k.inter", sep="\t"); inter.columns = [c.split(":")[0] for c in inter.columns]
item = pd.read_csv(f"{src}/ml-100k.item", sep="\t"); item.columns = [c.split(":")[0] for c in item.columns]
year = pd.to_numeric(item.set_index("item_id")["release_year"], errors="coerce")
cold = set(year[year >= 1997].index)
tv, tt = ds.split_timestamps
rated = inter.groupby("user_id").apply(lambda g: list(zip(g.timestamp, g.item_id)))
for name, loader in (("valid", valid), ("test", test)):
    rows = missing = rows_with = 0
    for batch, *_ in loader:
        m = loader._dataset.history_mask(batch)
        users = ds.id2token("user_id", batch["user_id"].numpy()).astype(int)
        times = batch["timestamp"].numpy()
        for r in range(len(users)):
            excl = {int(x) for x in ds.id2token("item_id", torch.nonzero(m[r]).flatten().numpy())}
            before = {i for t, i in rated[users[r]] if t < times[r]}
            miss = len(before - excl)
            rows += 1; missing += miss; rows_with += miss > 0
    print(f"{name}: {rows} rows; {rows_with} ({rows_with/rows:.1%}) have already-rated items left rankable; "
          f"mean {missing/rows:.2f} such items per row (all cold items rated in the training period)")
