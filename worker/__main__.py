"""`python -m worker ...`: a worker process (what the supervisor spawns); imports neither control nor FastAPI."""

from common.config import setup_logging
from common.exitcodes import run_main
from worker.cli import worker

setup_logging(0)
run_main(worker, prog_name="python -m worker")
