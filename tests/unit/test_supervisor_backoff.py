import signal

from worker.supervisor import BACKOFF_MAX_S, backoff_s, exit_reason


def test_restarts_past_the_budget_back_off_exponentially_up_to_a_cap():
    assert [backoff_s(k) for k in range(1, 6)] == [1, 2, 4, 8, 16]
    assert backoff_s(30) == BACKOFF_MAX_S == 60


def test_exit_reasons_name_the_signal():
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert exit_reason(1) == "exit code 1"
