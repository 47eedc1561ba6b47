"""Run a recbole-specgr or RecBole model: python run_recbole_specgr.py --model=SpecGRPP --dataset=ml-100k"""
import argparse

from recbole_specgr.quick_start import run_recbole_specgr

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", "-m", default="SpecGRPP", help="model name(s), comma-separated to compare")
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files")
    parser.add_argument("--result_json", default=None, help="write the result (metrics, timings, config) here")
    args, _ = parser.parse_known_args()  # any other --key=value reaches RecBole's Config
    files = args.config_files.strip().split(" ") if args.config_files else None
    if "," in args.model:
        from recbole_specgr.compare import run_comparison
        run_comparison(args.model.split(","), args.dataset, files, out_prefix=args.result_json)
    else:
        run_recbole_specgr(args.model, args.dataset, config_file_list=files, result_json=args.result_json)
