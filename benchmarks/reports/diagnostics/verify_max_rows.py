"""Run a script with verification's decoder calls (``TIGER.digit_log_probs``' user groups) capped at ``VERIFY_ROWS``
positions instead of ``CPU_MAX_ROWS`` (4,096; the beam search keeps its own): session 28's check of the cap now that
groups count real positions (speed_cpu.md section 17). Output of the runs below: ``verify_max_rows.txt``.

    for cap in 4096 2048 2730; do OMP_NUM_THREADS=1 VERIFY_ROWS=$cap python \\
        benchmarks/reports/diagnostics/verify_max_rows.py benchmarks/reports/diagnostics/eval_dump.py \\
        saved/SpecGRPP-<date>.pth /tmp/rows_$cap.json; done
"""
import os
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))

from recbole_specgr.inference import beam_search  # noqa: E402
from recbole_specgr.model.sequential_recommender import tiger  # noqa: E402

cap = int(os.environ["VERIFY_ROWS"])
plain = beam_search.user_groups
tiger.user_groups = lambda n, rows, device, max_rows=-1: plain(n, rows, device, cap if max_rows == -1 else max_rows)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
