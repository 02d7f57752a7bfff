"""`manage.py jobs [list]` and `manage.py jobs run NAME... | --all`: the housekeeping jobs,
their last runs, and running them by hand (each run is recorded like a scheduled one)."""
from django.core.management.base import BaseCommand, CommandError

from registrar import services
from registrar.tasks import JOBS, run_recorded


class Command(BaseCommand):
    help = "List the housekeeping jobs with their last run, or run some now."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action")
        actions.add_parser("list")
        run = actions.add_parser("run")
        run.add_argument("names", nargs="*", metavar="NAME")
        run.add_argument("--all", action="store_true", dest="run_all")

    def handle(self, *args, action=None, names=(), run_all=False, **options):
        if action == "run":
            return self._run(sorted(JOBS) if run_all else names)
        runs = {run.name: run for run in services.last_job_runs()}
        for name in sorted(set(JOBS) | set(runs)):
            run = runs.get(name)
            if run is None:
                self.stdout.write(f"{name:<28} never ran")
            else:
                self.stdout.write(f"{name:<28} {run.finished_at:%Y-%m-%d %H:%M:%S} {run.outcome:<6} "
                                  f"{run.duration:7.3f}s  {run.result.splitlines()[0] if run.result else ''}")

    def _run(self, names):
        if not names:
            raise CommandError("Name the jobs to run, or --all. Jobs: " + ", ".join(sorted(JOBS)))
        unknown = [name for name in names if name not in JOBS]
        if unknown:
            raise CommandError(f"No job {', '.join(unknown)}. Jobs: {', '.join(sorted(JOBS))}")
        failed = []
        for name in names:
            try:
                self.stdout.write(f"{name}: {run_recorded(name)}")
            except Exception as error:
                failed.append(name)
                self.stderr.write(f"{name}: failed: {type(error).__name__}: {error}")
        if failed:
            raise CommandError(f"{len(failed)} job(s) failed: {', '.join(failed)}")
