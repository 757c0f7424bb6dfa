"""Command line: ``python -m mmrepr run PARAMS [--stages ...] [--force]``; ``check``, ``report``, ``export``."""

from __future__ import annotations

import argparse
import logging
import sys

from mmrepr.stages import STAGE_NAMES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmrepr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the study's notebooks for a params profile")
    p_run.add_argument("params", help="a profile, e.g. params/demo.yaml")
    p_run.add_argument("--stages", nargs="+", choices=STAGE_NAMES, help="only these stages")
    p_run.add_argument("--force", action="store_true", help="rerun even if up to date")
    p_run.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="if another run holds this profile's run folder, wait this long (default: stop at once)")
    p_check = sub.add_parser("check", help="validate a params profile and print it")
    p_check.add_argument("params")
    p_rep = sub.add_parser("report", help="(re)build runs/<profile>/report/ from saved results")
    p_rep.add_argument("params")
    p_exp = sub.add_parser("export", help="write a profile's split (+ a feature set) for MMRec or Elliot")
    p_exp.add_argument("--format", required=True, choices=["mmrec", "elliot"])
    p_exp.add_argument("--params", required=True)
    p_exp.add_argument("--feature-set", default=None, help="a feature set of runs/<profile>/features/")
    p_exp.add_argument("--out", required=True, help="folder; the dataset goes to OUT/<profile>/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from mmrepr.config import ParamsError, load_params
    from mmrepr.runner import StageFailed

    try:
        if args.command == "run":
            from mmrepr.runner import run

            run(args.params, stages=args.stages, force=args.force, wait=args.wait)
        elif args.command == "check":
            from mmrepr.data.checks import check_run_data

            p = load_params(args.params)
            problems = check_run_data(p)
            if problems:
                raise ParamsError(f"{args.params}: " + "; ".join(problems))
            print(f"{args.params}: OK (profile {p.profile}, hash {p.hash[:12]}, run dir {p.run_dir})")
        elif args.command == "export":
            from mmrepr.export import export

            p = load_params(args.params)
            print(export(args.format, p.run_dir, args.out, p.profile, args.feature_set))
        elif args.command == "report":
            from mmrepr.analysis.report import build_report

            p = load_params(args.params)
            print(build_report(p))
    except (ParamsError, StageFailed, ValueError) as exc:  # ExportError/FeatureSetError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
