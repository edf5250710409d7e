"""`python -m producer ...`: a producer process (one stream, or a daemon running declared streams)."""

from common.config import setup_logging
from common.exitcodes import run_main
from producer.cli import producer

setup_logging(0)
run_main(producer, prog_name="python -m producer")
